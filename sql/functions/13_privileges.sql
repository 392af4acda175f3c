-- pgsse functions: privileges, granted last, after every function exists.

-- Least privilege: nothing for PUBLIC (a published table's writers need nothing: capture's triggers fire
-- whatever their function's grants), the gateway reads the log and calls its own entry points, publishers
-- call pgsse.publish.
REVOKE ALL ON SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgsse FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA pgsse FROM PUBLIC;
GRANT USAGE ON SCHEMA pgsse TO pgsse_gateway, pgsse_publisher;
GRANT SELECT ON pgsse.events, pgsse.channels, pgsse.meta, pgsse.migrations TO pgsse_gateway;
GRANT SELECT ON SEQUENCE pgsse.event_id_seq TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION
    pgsse.replay(bigint, bigint, text[], bigint), pgsse.watermark(text[]), pgsse.history(text, bigint, bigint),
    pgsse.prune(timestamptz, integer), pgsse.prune_channels(bigint, integer),
    pgsse.insert_json(text, jsonb), pgsse.insert_plan(text, text[]), pgsse.kept_insert_stale(), pgsse.bad_column(text, jsonb), pgsse.publish_json(text, text, jsonb),
    pgsse.refused(regclass, text, text, text),
    pgsse.clear_channel(text), pgsse.clearable(text), pgsse.begin_clear(text), pgsse.end_clear(),
    pgsse.camel_case(text), pgsse.sequence(integer, boolean), pgsse.sequenced(xid8, bigint, text),
    pgsse.issued_head(), pgsse.backlog(), pgsse.project(pgsse.channels, jsonb), pgsse.camel_keys(jsonb),
    pgsse.snapshot(text, jsonb, jsonb, bigint), pgsse.snapshot_count(text, jsonb, jsonb, bigint),
    pgsse.snapshot_query(pgsse.channels, jsonb, jsonb), pgsse.check_snapshot_reads(pgsse.channels),
    pgsse.snapshot_check(text, jsonb, jsonb), pgsse.filter_check(text, jsonb), pgsse.base_type(oid),
    pgsse.unreadable_columns(pgsse.channels, name),
    pgsse.owner_of(regclass),
    pgsse.snapshot_seam(text[]), pgsse.snapshot_columns(pgsse.channels), pgsse.within(text),
    pgsse.remember(text, text, text), pgsse.insert_json_once(text, jsonb, text, text, text),
    pgsse.publish_json_once(text, text, jsonb, text, text, text)
    TO pgsse_gateway;
GRANT EXECUTE ON PROCEDURE pgsse.sequence_step(boolean, xid8, bigint, text, bigint, boolean, bigint, text),
    pgsse.retain(timestamptz, bigint, integer, bigint) TO pgsse_gateway;
GRANT EXECUTE ON FUNCTION pgsse.publish(text, text, jsonb) TO pgsse_publisher;
GRANT EXECUTE ON FUNCTION pgsse.mercure_publish(text[], text, boolean, text, text, bigint)
    TO pgsse_gateway, pgsse_publisher;
