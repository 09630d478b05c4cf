-- The anomalies a payment's fold finds (negative escrow in history, a status disagreeing
-- with the legacy one, a cancelled payment holding money) are found afresh at the end of
-- every run and replace the last run's: a retried entry can put a history right, and a
-- stale listing would still explain a difference in `import verify`.
--
-- The service role gets no DELETE on the listing (the HTTP server runs as that role too):
-- only this function, which clears those three kinds for the payments named, as the
-- owner.
SET LOCAL ROLE escrow_ledger_owner;

CREATE FUNCTION legacy_import.clear_fold_anomalies(payment_object_ids text[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM legacy_import.anomalies
     WHERE collection = 'payments'
       AND kind IN ('negative_escrow', 'status_disagreement', 'cancelled_with_funds_held')
       AND object_id = ANY (payment_object_ids)
$$;

REVOKE ALL ON FUNCTION legacy_import.clear_fold_anomalies(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION legacy_import.clear_fold_anomalies(text[]) TO escrow_ledger_app;

RESET ROLE;
