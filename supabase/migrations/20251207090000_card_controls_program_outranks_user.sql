-- card_controls holds what the user asks for; the program's controls (ops freeze, suspension, credit
-- limit, ceiling on the daily limit, cash withdrawal policy) live in the financial database and win
-- (docs/controls.md). Documentation only: no column or access changes.

comment on column public.card_controls.frozen is
  'The user''s own freeze of all their cards. An ops freeze (financial database) is separate: unfreezing here never lifts it.';

comment on column public.card_controls.daily_limit_cents is
  'The daily limit the user asks for (null: the program default). A decrease applies at once, an increase after the program''s cool-down, and the program''s ceiling caps either.';

comment on column public.account_summaries.card_status is
  '''frozen'' when the user or the program froze the card; ''none'' before a card is issued.';
