-- pgsse schema 12. Mercure: the hub's updates are events of channel `.mercure`, a name that no native
-- stream, pgsse.publish or table may take; and a table channel may name the Mercure topic (a URI
-- template over its published columns) that its row events are updates on. Idempotent.

ALTER TABLE pgsse.channels
    ADD COLUMN IF NOT EXISTS mercure_topic  text,
    ADD COLUMN IF NOT EXISTS mercure_public boolean NOT NULL DEFAULT false;

-- A row like every channel's, so that retention by count and its watermark cover the hub's updates.
INSERT INTO pgsse.channels (name) VALUES ('.mercure') ON CONFLICT (name) DO NOTHING;

-- A subscriber resumes from a publisher's id: the newest update that carries it.
CREATE INDEX IF NOT EXISTS events_mercure_id ON pgsse.events ((payload ->> 'id'), id) WHERE channel = '.mercure';
