-- +goose Up
-- evident_append_set writes a group of appends in which no stream is named
-- twice, set-based, with no subtransaction: one INSERT ... ON CONFLICT for
-- the group's streams rows and one INSERT for its events (see appendSet in
-- set.go, which calls it, and evident_append in 00002, which takes every
-- group this function declines).
--
-- The streams rows are written in stream-name order, so that row locks are
-- taken in the order every writer takes them. A new row is what "no stream"
-- (-1) and "any" (-2) write; on a conflict the existing row, locked and
-- re-read at its latest committed version, is updated only if its version is
-- the one the append expects, or it expects any. An exact expectation writes
-- a row only where the stream is in the statement's snapshot, so that a
-- missing stream is never created. A row neither written nor updated is a
-- check that failed: the function then raises EV002 and nothing is written.
-- An event id already in the log ends it too, as a unique violation.
--
-- Each event's version is its stream's version before the group plus its
-- 1-based offset in that stream; events are inserted in argument order
-- (ORDER BY ev.i, below which the identity takes its values), so seq follows
-- that order and each append's events are next to each other.
--
-- Returns the transaction id, every event's seq in argument order, and each
-- stream's version before the group (-1 for a new stream).
--
-- Plans are generic: a custom plan, made for each call's array sizes, would
-- cost more to make than the statement costs to run.
-- +goose StatementBegin
CREATE FUNCTION evident_append_set(
    g_stream text[], g_expected bigint[], g_count bigint[],
    e_stream text[], e_offset bigint[], e_id uuid[], e_type text[], e_data bytea[], e_meta bytea[],
    OUT tx_id bigint, OUT seqs bigint[], OUT names text[], OUT starts bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    written bigint;
BEGIN
    WITH s AS (
        INSERT INTO streams AS s (stream, version)
        SELECT g.stream, greatest(g.expected, -1) + g.count
        FROM unnest(g_stream, g_expected, g_count) AS g(stream, expected, count)
        WHERE g.expected < 0 OR EXISTS (SELECT FROM streams AS x WHERE x.stream = g.stream)
        ORDER BY g.stream
        ON CONFLICT (stream) DO UPDATE
        SET version = CASE WHEN g_expected[array_position(g_stream, s.stream)] = -2
            THEN s.version + g_count[array_position(g_stream, s.stream)]
            ELSE excluded.version END
        WHERE g_expected[array_position(g_stream, s.stream)] IN (-2, s.version)
        RETURNING s.stream, s.version - g_count[array_position(g_stream, s.stream)] AS start
    ), w AS (
        INSERT INTO events AS e (event_id, stream, version, type, data, metadata)
        SELECT ev.id, ev.stream, s.start + ev.off, ev.type, ev.data, ev.meta
        FROM unnest(e_stream, e_offset, e_id, e_type, e_data, e_meta)
            WITH ORDINALITY AS ev(stream, off, id, type, data, meta, i)
        JOIN s ON s.stream = ev.stream
        ORDER BY ev.i
        RETURNING e.tx, e.seq
    )
    SELECT (SELECT min(w.tx::text::bigint) FROM w), (SELECT array_agg(w.seq ORDER BY w.seq) FROM w),
        a.names, a.starts, a.n
    INTO tx_id, seqs, names, starts, written
    FROM (SELECT array_agg(s.stream) AS names, array_agg(s.start) AS starts, count(*) AS n FROM s) AS a;
    IF written <> cardinality(g_stream) THEN
        RAISE EXCEPTION USING ERRCODE = 'EV002', MESSAGE = 'a stream is not at the version an append expects';
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION evident_append_set(text[], bigint[], bigint[], text[], bigint[], uuid[], text[], bytea[], bytea[]);
