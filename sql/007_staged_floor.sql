-- pgsse schema 7. Sequencing steps read pgsse.staged from a floor rather than from the index's start,
-- where, between VACUUMs, the index keeps the entries of every row already moved to the log: walking them
-- took most of a busy step's time. Idempotent.

-- Every staged row numbered below `floor` has been moved to the log, and no transaction still to commit
-- can draw a number below it (pgsse.sequence raises it when it finds no writer in flight).
CREATE TABLE IF NOT EXISTS pgsse.staged_floor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    floor     bigint  NOT NULL DEFAULT 0
);
INSERT INTO pgsse.staged_floor DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
