-- pgsse schema 8. An update keeps the old row (projected) beside its payload, whatever old_values says:
-- a filtered stream tells from it whether the row entered or left the filter, and sends an insert or a
-- delete instead of the update. Idempotent.

ALTER TABLE pgsse.staged ADD COLUMN IF NOT EXISTS old jsonb;
ALTER TABLE pgsse.events ADD COLUMN IF NOT EXISTS old jsonb;
