-- A NOTIFY sent inside an appending transaction takes a cluster-wide lock at commit and
-- holds it through the WAL flush, so appends from many writers committed one at a time
-- (0.12 of the raw insert rate at 32 writers). Processes that append now announce their
-- commits on the same channel from a transaction of their own (ledger::store::Notifier),
-- coalescing many commits into one notification; projectors still poll as well.
DROP TRIGGER events_notify ON events;
DROP FUNCTION projection.notify_events();
