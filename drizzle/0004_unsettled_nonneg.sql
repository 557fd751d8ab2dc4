-- Captured-but-unsettled spend can never be negative: a refund lowers it by at most what its
-- authorization captured and what is still unsettled (hot-path/lifecycle/scripts.ts); anything beyond
-- is booked to `user_refunds_held` for review, never as spendable credit. Added without NOT VALID on
-- purpose: a database that already holds a negative row must stop here until a person books an
-- adjustment for it (docs/ledger.md, "Refunds").
ALTER TABLE "credit_accounts" ADD CONSTRAINT "credit_accounts_unsettled_nonneg" CHECK ("unsettled_cents" >= 0);
