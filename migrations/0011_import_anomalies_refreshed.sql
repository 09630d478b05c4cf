-- The anomalies a payment's fold finds (negative escrow in history, a status disagreeing
-- with the legacy one, a cancelled payment holding money) are found afresh at the end of
-- every run and replace the last run's: a retried entry can put a history right, and a
-- stale listing would still explain a difference in `import verify`. The anomalies are a
-- listing about the legacy data, not the ledger: the events stay append-only.
GRANT DELETE ON legacy_import.anomalies TO escrow_ledger_app;
