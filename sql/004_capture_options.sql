-- pgsse schema 4: a table channel's capture options live in its pgsse.channels row, where the capture
-- function reads them as their owner, instead of in trigger arguments that anyone could copy.
-- Idempotent.

ALTER TABLE pgsse.channels
    ADD COLUMN IF NOT EXISTS operations      text[]  NOT NULL DEFAULT ARRAY['INSERT'],
    ADD COLUMN IF NOT EXISTS insert_event    text    NOT NULL DEFAULT 'insert',
    ADD COLUMN IF NOT EXISTS update_event    text    NOT NULL DEFAULT 'update',
    ADD COLUMN IF NOT EXISTS delete_event    text    NOT NULL DEFAULT 'delete',
    ADD COLUMN IF NOT EXISTS truncate_event  text    NOT NULL DEFAULT 'truncate',
    -- At most one of the two is set: an allow-list, or a deny-list (which publishes columns added later).
    ADD COLUMN IF NOT EXISTS columns         text[],
    ADD COLUMN IF NOT EXISTS exclude_columns text[],
    ADD COLUMN IF NOT EXISTS old_values      boolean NOT NULL DEFAULT false;

-- Schema 3 kept a table's options in its trigger's arguments (channel, insert, update and delete event,
-- 'camel' or 'plain') and its operations in the trigger's type bits. Moved here once; sql/functions/ then
-- replaces each such trigger with one that passes only the channel.
UPDATE pgsse.channels c
   SET operations = array_remove(ARRAY[CASE WHEN t.tgtype::int & 4 <> 0 THEN 'INSERT' END,
                                       CASE WHEN t.tgtype::int & 16 <> 0 THEN 'UPDATE' END,
                                       CASE WHEN t.tgtype::int & 8 <> 0 THEN 'DELETE' END], NULL),
       insert_event = t.args[2], update_event = t.args[3], delete_event = t.args[4]
  FROM (SELECT tg.tgrelid, tg.tgtype, string_to_array(encode(tg.tgargs, 'escape'), '\000') AS args
          FROM pg_catalog.pg_trigger tg
         WHERE tg.tgname = 'pgsse_capture' AND tg.tgnargs >= 4) AS t
 WHERE t.tgrelid = c.source_table AND t.args[1] = c.name;
