-- pgsse schema 5. The lock that orders commits is a table of pgsse's own rather than an advisory key: any
-- role that may connect can take an advisory lock, and one that held the ordering key froze every
-- capturing commit; locking this table takes a privilege on it, which nobody but its owner has.
-- Table channels take POST only when published with writable => true (optionally limited to some columns).
-- Idempotent.

-- No rows: only ever locked (EXCLUSIVE, by the sequencing step, pgsse.sequence, as its owner).
CREATE TABLE IF NOT EXISTS pgsse.commit_order ();
REVOKE ALL ON pgsse.commit_order FROM PUBLIC;

-- Channels published before this took POST without being asked to: they keep doing so, so an upgrade
-- breaks no deployed page. New ones take POST only when published with writable => true.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                    WHERE attrelid = 'pgsse.channels'::regclass AND attname = 'writable' AND NOT attisdropped) THEN
        ALTER TABLE pgsse.channels ADD COLUMN writable boolean NOT NULL DEFAULT false,
                                   ADD COLUMN writable_columns text[];
        UPDATE pgsse.channels SET writable = true WHERE source_table IS NOT NULL;
    END IF;
END $$;
