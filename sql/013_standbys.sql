-- pgsse schema 13. Gateways may read the log on hot standbys. A VACUUM that truncates the end of
-- pgsse.staged (emptied by every sequencing step) or pgsse.events (by retention) takes an ACCESS EXCLUSIVE
-- lock, which a standby replays only after the queries reading the table end (a snapshot's, which its
-- client may read slowly) or once it cancels them: every stream of every gateway on it would wait.
-- Idempotent.

ALTER TABLE pgsse.staged SET (vacuum_truncate = off);
ALTER TABLE pgsse.events SET (vacuum_truncate = off);
