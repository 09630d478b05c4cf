-- A projector whose step fails on a database error (not a halt: those are recorded as
-- `halted_reason` and wait for a rebuild) retries with a backoff. Until now only its
-- log said so, and `/readyz` showed it as healthy while it fell behind for good. Its
-- runner now records the first failure's time and the latest error here, and clears
-- both when a step succeeds again.
ALTER TABLE projection.projector_state
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN last_error text;

COMMENT ON COLUMN projection.projector_state.failing_since IS 'Since when its steps fail on a database error (retried); NULL when the last step succeeded.';
COMMENT ON COLUMN projection.projector_state.last_error IS 'The latest failed step''s error, while failing_since is set.';
