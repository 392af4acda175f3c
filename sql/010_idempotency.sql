-- pgsse schema 10. POST's Idempotency-Key: the write a key made is remembered for a day, in the
-- writing transaction itself, so that every gateway (and one restarted) answers a repeat with the first
-- write's event instead of writing again. Idempotent.

-- scope: the token's subject ('' without one); request: a digest of the channel, event and body, so that
-- a key sent again with another request is told apart; txid and after find the write's event in the log.
CREATE TABLE IF NOT EXISTS pgsse.idempotency (
    scope      text        NOT NULL,
    key        text        NOT NULL,
    request    text        NOT NULL,
    txid       xid8        NOT NULL,
    after      bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_created_at ON pgsse.idempotency (created_at);
