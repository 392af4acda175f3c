-- pgsse schema 11. An event that empties its channel (a clear, a table's truncate) reaches every stream
-- of the channel, filtered or not: marked when pgsse's own code stages it, never read from its name (which
-- a table's row events may share, or an earlier schema's publisher may have used). Events logged before
-- are not marked. Idempotent.

ALTER TABLE pgsse.staged ADD COLUMN IF NOT EXISTS wide boolean NOT NULL DEFAULT false;
ALTER TABLE pgsse.events ADD COLUMN IF NOT EXISTS wide boolean NOT NULL DEFAULT false;
