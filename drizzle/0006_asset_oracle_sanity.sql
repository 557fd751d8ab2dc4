ALTER TABLE "assets" ADD COLUMN "price_answer_min" numeric(78, 0) DEFAULT 1 NOT NULL;--> statement-breakpoint
ALTER TABLE "assets" ADD COLUMN "price_answer_max" numeric(78, 0) DEFAULT 3138550867693340381917894711603833208051177722232017256447 NOT NULL;--> statement-breakpoint
ALTER TABLE "assets" ADD COLUMN "price_deviation_max_bps" integer DEFAULT 1000 NOT NULL;--> statement-breakpoint
ALTER TABLE "assets" ADD COLUMN "price_future_skew_s" integer DEFAULT 15 NOT NULL;--> statement-breakpoint
ALTER TABLE "assets" ADD CONSTRAINT "assets_price_sanity" CHECK ("assets"."price_answer_min" >= 1 and "assets"."price_answer_min" <= "assets"."price_answer_max" and "assets"."price_deviation_max_bps" > 0 and "assets"."price_future_skew_s" between 0 and 300);