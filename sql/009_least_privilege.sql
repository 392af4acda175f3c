-- pgsse schema 9. A capture stages its event at the end of the writer's statement, from two plain row
-- triggers: one makes the row's JSON with the writer's own rights, the next (pgsse's owner's) stages it.
-- A transaction's events go to the log in the order of the last number it drew (at its commit, or later
-- than any event it staged), which no setting a writer may change steers. Retention has floors that only
-- pgsse's owner may lower. Idempotent.

-- `tx` was read from a session setting that any writer could set; schema 9 orders by numbers drawn by
-- pgsse's own code and reads pgsse.staged from a floor of transaction ids: every transaction older than
-- the oldest one running when a batch began had ended, so that batch took its rows (a floor of numbers
-- could not rise while any writer's transaction stayed open). `tx` and the old numeric floor stay, unused,
-- so that schema 8's functions work until sql/functions/ (applied next, in a transaction of its own)
-- replaces them; a floor of 0 takes again any rows that a forged `tx` stranded.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = 'pgsse.staged_pkey'::regclass AND a.attname = 'tx') THEN
        ALTER TABLE pgsse.staged DROP CONSTRAINT staged_pkey;
        ALTER TABLE pgsse.staged ALTER COLUMN tx DROP NOT NULL;
        ALTER TABLE pgsse.staged ADD PRIMARY KEY (txid, seq);
    END IF;
END
$$;
ALTER TABLE pgsse.staged_floor ADD COLUMN IF NOT EXISTS floor_xid xid8 NOT NULL DEFAULT '0';

-- The first event a transaction stages rings the doorbell when the transaction commits, and takes then
-- the number that places the transaction in commit order (`committed`).
ALTER TABLE pgsse.staged ADD COLUMN IF NOT EXISTS ring boolean NOT NULL DEFAULT false,
                         ADD COLUMN IF NOT EXISTS committed bigint;

-- Taken by the one committing writer that wakes the gateways after a sequencing step: a number, not a
-- lock, so a writer whose transaction stays open holds nothing another writer waits for.
CREATE SEQUENCE IF NOT EXISTS pgsse.bell AS bigint;

-- Gateways are woken on the channel pgsse_<bell_token>, which only those that may read pgsse.meta know: any
-- login may LISTEN or NOTIFY on a channel it can name, and would otherwise learn when published writes
-- commit, or wake every gateway for nothing.
ALTER TABLE pgsse.meta ADD COLUMN IF NOT EXISTS bell_token text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- Retention prunes nothing younger than min_age, nor a channel's newest min_events, whatever a gateway
-- asks: the gateway's login may leak, and its retention flags live outside the database.
ALTER TABLE pgsse.meta
    ADD COLUMN IF NOT EXISTS min_age    interval NOT NULL DEFAULT '1 hour',
    ADD COLUMN IF NOT EXISTS min_events bigint   NOT NULL DEFAULT 100;

-- The tables that pgsse.clear_channel is emptying in an open transaction: their deletes record no events.
-- after_seq is the clear event's number: once the transaction stages anything more on the channel, its
-- deletes are recorded again.
CREATE UNLOGGED TABLE IF NOT EXISTS pgsse.clearing (
    txid         xid8     NOT NULL,
    source_table regclass NOT NULL,
    after_seq    bigint   NOT NULL
);
