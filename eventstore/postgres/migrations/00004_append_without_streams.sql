-- +goose Up
-- Appends no longer keep a row per stream. The streams table cost every
-- append one more heap row, index entry and WAL record than the event itself
-- does, and its row locks are not needed to check a version:
--
--   * A stream's versions are a prefix 0..n of the integers: an event at
--     version k > 0 is only ever written when k-1 is committed (in the
--     writer's snapshot, or read under the stream's lock, below), and the
--     unique index on (stream, version) lets one writer of each version win.
--     So an append expecting version v succeeds exactly when v is in the log
--     and its insert at v+1 is not refused: the stream was at v.
--   * Every append takes a transaction-level advisory lock per stream it
--     names, keyed hashtextextended(stream, 1), all of them in key order
--     before it writes, so that writers of one stream queue on the lock in
--     one order and never deadlock on each other's index entries. (Not
--     past 64 streams in one statement: each lock takes a slot of the
--     server's shared lock table. Such bulk appends rely on the deadlock
--     detector, see maxLockedStreams in set.go.)
--   * Readers recognise an append by the ROW EXCLUSIVE lock it holds on the
--     events table, taken before its transaction has an id (see horizon in
--     postgres.go); nothing else in this package writes that table.
--
-- The set-based statements are now sent by Go as plain INSERTs (appendSet
-- and appendEach in set.go), and evident_append, which takes every group
-- they decline, checks versions against the log under the streams' locks.
-- Processes still running the code before this migration must be stopped:
-- their statements name the streams table and fail, rather than append
-- without the check the others rely on.
DROP FUNCTION evident_append_set(text[], bigint[], bigint[], text[], bigint[], uuid[], text[], bytea[], bytea[]);
DROP TABLE streams;

-- evident_append: the arguments and results of 00002, unchanged.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION evident_append(
    c_guard int[], c_request int[], c_event int[],
    g_stream text[], g_expected bigint[], g_count bigint[],
    r_guard int[], r_expected bigint[], r_before bigint[],
    e_guard int[], e_offset bigint[], e_id uuid[], e_type text[], e_data bytea[], e_meta bytea[])
RETURNS TABLE (status int, detail text, tx bigint, seq bigint, starts bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    c      int;
    g      int;
    r      int;
    g_lo   int := 1;
    r_lo   int := 1;
    e_lo   int := 1;
    st     bigint[];
    v      bigint;
    at     bigint;
    i      int;
    cname  text;
BEGIN
    -- The mark readers look for, held by the transaction itself: a lock
    -- taken by a call's subtransaction would go with it if the call failed,
    -- while the transaction kept the id it had been given.
    LOCK TABLE events IN ROW EXCLUSIVE MODE;
    -- Every stream of the group, in key order, before anything is read:
    -- each statement below then reads every version committed before it.
    -- Not past 64 streams, as appendSet (maxLockedStreams in set.go): each
    -- lock takes a slot of the server's shared lock table.
    IF cardinality(g_stream) <= 64 THEN
        PERFORM pg_advisory_xact_lock(l.k)
        FROM (SELECT DISTINCT hashtextextended(n, 1) AS k FROM unnest(g_stream) AS n ORDER BY 1) AS l;
    END IF;

    FOR c IN 1 .. coalesce(array_length(c_guard, 1), 0) LOOP
        status := 0; detail := NULL; tx := NULL; seq := NULL; starts := NULL;
        BEGIN
            st := array_fill(0::bigint, ARRAY[c_guard[c] - g_lo + 1]);
            FOR g IN g_lo .. c_guard[c] LOOP
                SELECT max(e.version) INTO v FROM events AS e WHERE e.stream = g_stream[g];
                IF g_expected[g] = -1 AND v IS NOT NULL THEN
                    RAISE EXCEPTION USING ERRCODE = 'EV001',
                        MESSAGE = format('append to %s: expected no stream, the stream exists', to_json(g_stream[g]));
                ELSIF g_expected[g] >= 0 AND v IS DISTINCT FROM g_expected[g] THEN
                    RAISE EXCEPTION USING ERRCODE = 'EV001',
                        MESSAGE = format('append to %s: expected version %s, the stream is at %s',
                            to_json(g_stream[g]), g_expected[g], coalesce(v::text, 'no stream'));
                END IF;
                st[g - g_lo + 1] := coalesce(v, -1);
            END LOOP;

            -- A later request on a stream an earlier request of the call
            -- named is checked against the version the earlier ones leave.
            FOR r IN r_lo .. c_request[c] LOOP
                at := st[r_guard[r] - g_lo + 1] + r_before[r];
                IF r_expected[r] <> -2 AND r_expected[r] <> at THEN
                    RAISE EXCEPTION USING ERRCODE = 'EV001',
                        MESSAGE = format('append to %s: expected version %s, the stream is at %s',
                            to_json(g_stream[r_guard[r]]), r_expected[r], at);
                END IF;
            END LOOP;

            FOR i IN e_lo .. c_event[c] LOOP
                INSERT INTO events AS e (event_id, stream, version, type, data, metadata)
                VALUES (e_id[i], g_stream[e_guard[i]], st[e_guard[i] - g_lo + 1] + e_offset[i],
                        e_type[i], e_data[i], e_meta[i])
                RETURNING e.tx::text::bigint, e.seq INTO tx, seq;
            END LOOP;
            starts := st;
        EXCEPTION
            WHEN SQLSTATE 'EV001' THEN
                status := 1;
                detail := SQLERRM;
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
                status := CASE WHEN cname = 'events_event_id_key' THEN 2 ELSE 1 END;
                detail := SQLERRM;
        END;
        RETURN NEXT;
        g_lo := c_guard[c] + 1;
        r_lo := c_request[c] + 1;
        e_lo := c_event[c] + 1;
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- Back to 00003: the streams table rebuilt from the log, and the functions
-- as 00002 and 00003 made them.
CREATE TABLE streams (
    stream  text   NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    CONSTRAINT streams_pkey PRIMARY KEY (stream)
);
INSERT INTO streams (stream, version) SELECT stream, max(version) FROM events GROUP BY stream;

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION evident_append(
    c_guard int[], c_request int[], c_event int[],
    g_stream text[], g_expected bigint[], g_count bigint[],
    r_guard int[], r_expected bigint[], r_before bigint[],
    e_guard int[], e_offset bigint[], e_id uuid[], e_type text[], e_data bytea[], e_meta bytea[])
RETURNS TABLE (status int, detail text, tx bigint, seq bigint, starts bigint[])
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    c      int;
    g      int;
    r      int;
    g_lo   int := 1;
    r_lo   int := 1;
    e_lo   int := 1;
    st     bigint[];
    v      bigint;
    at     bigint;
    i      int;
    cname  text;
BEGIN
    -- Each call locks its streams in name order, but a group of calls would
    -- lock them call after call: two groups naming the same two streams in
    -- opposite calls could deadlock. Lock the group's existing streams first,
    -- in name order, as every writer does.
    IF array_length(c_guard, 1) > 1 THEN
        PERFORM 1 FROM streams AS s WHERE s.stream = ANY (g_stream) ORDER BY s.stream FOR UPDATE;
    END IF;

    FOR c IN 1 .. coalesce(array_length(c_guard, 1), 0) LOOP
        status := 0; detail := NULL; tx := NULL; seq := NULL; starts := NULL;
        BEGIN
            st := array_fill(0::bigint, ARRAY[c_guard[c] - g_lo + 1]);
            FOR g IN g_lo .. c_guard[c] LOOP
                IF g_expected[g] = -1 THEN
                    INSERT INTO streams AS s (stream, version) VALUES (g_stream[g], g_count[g] - 1)
                    ON CONFLICT (stream) DO NOTHING;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION USING ERRCODE = 'EV001',
                            MESSAGE = format('append to %s: expected no stream, the stream exists', to_json(g_stream[g]));
                    END IF;
                    st[g - g_lo + 1] := -1;
                ELSIF g_expected[g] = -2 THEN
                    INSERT INTO streams AS s (stream, version) VALUES (g_stream[g], g_count[g] - 1)
                    ON CONFLICT (stream) DO UPDATE SET version = s.version + g_count[g]
                    RETURNING s.version INTO v;
                    st[g - g_lo + 1] := v - g_count[g];
                ELSE
                    UPDATE streams AS s SET version = g_expected[g] + g_count[g]
                    WHERE s.stream = g_stream[g] AND s.version = g_expected[g];
                    IF NOT FOUND THEN
                        SELECT s.version INTO v FROM streams AS s WHERE s.stream = g_stream[g];
                        RAISE EXCEPTION USING ERRCODE = 'EV001',
                            MESSAGE = format('append to %s: expected version %s, the stream is at %s',
                                to_json(g_stream[g]), g_expected[g], coalesce(v::text, 'no stream'));
                    END IF;
                    st[g - g_lo + 1] := g_expected[g];
                END IF;
            END LOOP;

            -- A later request on a stream an earlier request of the call
            -- named is checked against the version the earlier ones leave.
            FOR r IN r_lo .. c_request[c] LOOP
                at := st[r_guard[r] - g_lo + 1] + r_before[r];
                IF r_expected[r] <> -2 AND r_expected[r] <> at THEN
                    RAISE EXCEPTION USING ERRCODE = 'EV001',
                        MESSAGE = format('append to %s: expected version %s, the stream is at %s',
                            to_json(g_stream[r_guard[r]]), r_expected[r], at);
                END IF;
            END LOOP;

            -- One plain INSERT per event: a cached plan each, and the
            -- last one's RETURNING is the call's position.
            FOR i IN e_lo .. c_event[c] LOOP
                INSERT INTO events AS e (event_id, stream, version, type, data, metadata)
                VALUES (e_id[i], g_stream[e_guard[i]], st[e_guard[i] - g_lo + 1] + e_offset[i],
                        e_type[i], e_data[i], e_meta[i])
                RETURNING e.tx::text::bigint, e.seq INTO tx, seq;
            END LOOP;
            starts := st;
        EXCEPTION
            WHEN SQLSTATE 'EV001' THEN
                status := 1;
                detail := SQLERRM;
            WHEN unique_violation THEN
                GET STACKED DIAGNOSTICS cname = CONSTRAINT_NAME;
                status := CASE WHEN cname = 'events_event_id_key' THEN 2 ELSE 1 END;
                detail := SQLERRM;
        END;
        RETURN NEXT;
        g_lo := c_guard[c] + 1;
        r_lo := c_request[c] + 1;
        e_lo := c_event[c] + 1;
    END LOOP;
END
$$;
-- +goose StatementEnd

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
