-- How fresh the finance views are, readable by finance: `docs/read-views.md` sent finance
-- to `projection.projector_state`, a schema its role may not use (found by a review
-- logged in with `escrow_ledger_finance` only).
CREATE VIEW finance.projector_status AS
SELECT projector,
       checkpoint_position,
       events_applied,
       updated_at,
       halted_reason,
       halted_at,
       failing_since,
       last_error,
       rebuilt_at
FROM projection.projector_state;

COMMENT ON VIEW finance.projector_status IS 'Each projector: the last event position it applied, when, and whether it halted (waits for a rebuild) or fails (retries).';

GRANT SELECT ON finance.projector_status TO escrow_ledger_app, escrow_ledger_finance;
