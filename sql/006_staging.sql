-- pgsse schema 6. Writers no longer order their commits: a capture stages its event, and a gateway's
-- sequencing step (pgsse.sequence) gives committed staged events their ids in batches, under the one lock.
-- Events already in the log keep their ids. Idempotent.

-- Drawn by captures at commit time, so a transaction that commits after another has finished gets higher
-- numbers: within a batch, transactions go in the order of their first number.
CREATE SEQUENCE IF NOT EXISTS pgsse.staged_seq AS bigint;

-- Events committed but not yet in the log. `tx` is the first seq its transaction drew, so one index serves
-- both the batch order and taking a transaction whole. Logged: a committed write's event must survive a
-- crash as the write does.
CREATE TABLE IF NOT EXISTS pgsse.staged (
    tx         bigint      NOT NULL,
    seq        bigint      NOT NULL,
    txid       xid8        NOT NULL,
    channel    text        NOT NULL,
    event      text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tx, seq)
);

-- The transaction that recorded each event, so a gateway finds the event of its own POST in the log.
ALTER TABLE pgsse.events ADD COLUMN IF NOT EXISTS txid xid8;

-- Whether a committing writer should wake the gateways (NOTIFY). One writer at a time does so, holding
-- the row's lock until its commit ends; the sequencing gateway clears `armed` while it reads on the clock.
CREATE TABLE IF NOT EXISTS pgsse.doorbell (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    armed     boolean NOT NULL DEFAULT true
);
INSERT INTO pgsse.doorbell DEFAULT VALUES ON CONFLICT (singleton) DO NOTHING;
