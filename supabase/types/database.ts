/**
 * The `Database` type of supabase-js for the web app, derived from one runtime description of the
 * exposed schema (`PUBLIC_TABLES`). `database.test.ts` compares that description with the columns,
 * types, nullability, defaults and `check (… in (…))` lists of a database built from
 * `supabase/migrations`, so the types cannot drift from the migrations unnoticed.
 *
 * The mapping follows `supabase gen types` (bigint → number: PostgREST sends int8 as a JSON number,
 * exact up to 2^53, far above any cents amount here; numeric → number; timestamptz → string).
 * Regenerating with the CLI for comparison:
 * `supabase gen types --lang=typescript --schema public --remote=$SUPABASE_DB_URL`.
 */

export type Json = string | number | boolean | null | { [key: string]: Json | undefined } | Json[];

type PgType = 'uuid' | 'text' | 'text[]' | 'boolean' | 'bigint' | 'numeric' | 'timestamptz';

export interface ColumnSpec {
  readonly type: PgType;
  readonly nullable: boolean;
  /** Has a default, so an insert may leave it out. */
  readonly hasDefault: boolean;
  /** The values a `check (column in (…))` constraint allows. */
  readonly values?: readonly string[];
}

const col = <const T extends PgType, const N extends boolean, const D extends boolean>(
  type: T,
  nullable: N,
  hasDefault: D,
) => ({ type, nullable, hasDefault });

const oneOf = <const V extends readonly string[], const N extends boolean, const D extends boolean>(
  values: V,
  nullable: N,
  hasDefault: D,
) => ({ type: 'text' as const, nullable, hasDefault, values });

/** Every table of the `public` schema, column by column. */
export const PUBLIC_TABLES = {
  profiles: {
    id: col('uuid', false, false),
    email: col('text', true, false),
    display_name: col('text', true, false),
    avatar_url: col('text', true, false),
    locale: col('text', false, true),
    kyc_status: oneOf(['none', 'pending', 'verified', 'rejected'], false, true),
    created_at: col('timestamptz', false, true),
    updated_at: col('timestamptz', false, true),
  },
  card_controls: {
    user_id: col('uuid', false, false),
    frozen: col('boolean', false, true),
    daily_limit_cents: col('bigint', true, false),
    blocked_mccs: col('text[]', false, true),
    version: col('bigint', false, true),
    updated_at: col('timestamptz', false, true),
  },
  account_summaries: {
    user_id: col('uuid', false, false),
    account_status: oneOf(['active', 'suspended', 'closed'], false, false),
    card_status: oneOf(['none', 'active', 'frozen', 'inactive', 'canceled'], false, false),
    collateral_value_cents: col('bigint', false, false),
    borrow_power_cents: col('bigint', false, false),
    credit_limit_cents: col('bigint', false, false),
    debt_onchain_cents: col('bigint', false, false),
    unsettled_cents: col('bigint', false, false),
    holds_cents: col('bigint', false, false),
    available_cents: col('bigint', false, false),
    health_factor: col('numeric', true, false),
    health_notice: oneOf(['warning', 'liquidation'], true, false),
    stale_asset_ids: col('text[]', false, true),
    as_of: col('timestamptz', false, false),
    synced_at: col('timestamptz', false, true),
  },
  account_activity: {
    id: col('text', false, false),
    user_id: col('uuid', false, false),
    kind: oneOf(['authorization', 'capture', 'refund', 'deposit', 'withdrawal', 'liquidation'], false, false),
    status: col('text', false, false),
    outcome: oneOf(['approved', 'partial', 'declined'], true, false),
    amount_cents: col('bigint', true, false),
    asset_id: col('text', true, false),
    amount_base: col('text', true, false),
    merchant_name: col('text', true, false),
    merchant_category_code: col('text', true, false),
    authorization_id: col('text', true, false),
    decline_code: col('text', true, false),
    decline_message: col('text', true, false),
    occurred_at: col('timestamptz', false, false),
    synced_at: col('timestamptz', false, true),
  },
} as const satisfies Record<string, Record<string, ColumnSpec>>;

/**
 * The support views of the `public` schema (supabase/migrations/20251209090000_support_views.sql):
 * read-only, rows for support staff only. Money in dollars (numeric, two decimals). Postgres reports
 * every view column as nullable, and `supabase gen types` types them so.
 */
export const PUBLIC_VIEWS = {
  support_accounts: {
    user_id: col('uuid', true, false),
    email: col('text', true, false),
    display_name: col('text', true, false),
    kyc_status: col('text', true, false),
    signed_up_at: col('timestamptz', true, false),
    account_status: col('text', true, false),
    card_status: col('text', true, false),
    user_frozen: col('boolean', true, false),
    requested_daily_limit_dollars: col('numeric', true, false),
    blocked_mccs: col('text[]', true, false),
    collateral_value_dollars: col('numeric', true, false),
    borrow_power_dollars: col('numeric', true, false),
    credit_limit_dollars: col('numeric', true, false),
    debt_onchain_dollars: col('numeric', true, false),
    unsettled_dollars: col('numeric', true, false),
    holds_dollars: col('numeric', true, false),
    available_dollars: col('numeric', true, false),
    health_factor: col('numeric', true, false),
    health_notice: col('text', true, false),
    stale_asset_ids: col('text[]', true, false),
    as_of: col('timestamptz', true, false),
  },
  support_activity: {
    id: col('text', true, false),
    user_id: col('uuid', true, false),
    email: col('text', true, false),
    display_name: col('text', true, false),
    kind: col('text', true, false),
    status: col('text', true, false),
    outcome: col('text', true, false),
    amount_dollars: col('numeric', true, false),
    asset_id: col('text', true, false),
    amount_base: col('text', true, false),
    merchant_name: col('text', true, false),
    merchant_category_code: col('text', true, false),
    authorization_id: col('text', true, false),
    decline_code: col('text', true, false),
    decline_message: col('text', true, false),
    occurred_at: col('timestamptz', true, false),
  },
  support_actions: {
    id: col('bigint', true, false),
    at: col('timestamptz', true, false),
    actor_id: col('uuid', true, false),
    actor_email: col('text', true, false),
    action: col('text', true, false),
    user_id: col('uuid', true, false),
    user_email: col('text', true, false),
    reason: col('text', true, false),
    changed: col('boolean', true, false),
  },
} as const satisfies Record<string, Record<string, ColumnSpec>>;

type Specs = typeof PUBLIC_TABLES;
type ViewSpecs = typeof PUBLIC_VIEWS;

type TsOf<C> = C extends { values: readonly (infer V)[] }
  ? V
  : C extends { type: infer T }
    ? T extends 'uuid' | 'text' | 'timestamptz'
      ? string
      : T extends 'text[]'
        ? string[]
        : T extends 'boolean'
          ? boolean
          : T extends 'bigint' | 'numeric'
            ? number
            : never
    : never;

type Value<C> = C extends { nullable: true } ? TsOf<C> | null : TsOf<C>;

type Flatten<T> = { [K in keyof T]: T[K] };

type RowOf<S> = { [K in keyof S]: Value<S[K]> };
type RequiredOnInsert<S> = {
  [K in keyof S]: S[K] extends { nullable: false; hasDefault: false } ? K : never;
}[keyof S];
type InsertOf<S> = Flatten<
  { [K in RequiredOnInsert<S>]: Value<S[K]> } & { [K in Exclude<keyof S, RequiredOnInsert<S>>]?: Value<S[K]> }
>;
type UpdateOf<S> = { [K in keyof S]?: Value<S[K]> };

type TableOf<S> = {
  Row: RowOf<S>;
  Insert: InsertOf<S>;
  Update: UpdateOf<S>;
  Relationships: [];
};

export type Database = {
  public: {
    Tables: { [T in keyof Specs]: TableOf<Specs[T]> };
    Views: { [V in keyof ViewSpecs]: { Row: RowOf<ViewSpecs[V]>; Relationships: [] } };
    Functions: {
      /** Support staff only: freezes a cardholder's cards with a reason; 'frozen' or 'already_frozen'. */
      support_freeze_card: { Args: { target_user_id: string; freeze_reason: string }; Returns: string };
    };
    Enums: { [_ in never]: never };
    CompositeTypes: { [_ in never]: never };
  };
};

type PublicTables = Database['public']['Tables'];
export type TableName = keyof PublicTables;
/** `Tables<'profiles'>` is a profile row, as in the CLI's generated helpers. */
export type Tables<T extends TableName> = PublicTables[T]['Row'];
export type TablesInsert<T extends TableName> = PublicTables[T]['Insert'];
export type TablesUpdate<T extends TableName> = PublicTables[T]['Update'];
