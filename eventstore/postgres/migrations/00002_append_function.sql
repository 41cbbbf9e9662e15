-- +goose Up
-- evident_append writes a group of appends in one statement, so that an
-- append is one round trip and concurrent appends share one transaction and
-- one WAL flush (group commit, see group.go). Each append ("call") runs in its
-- own subtransaction: a wrong expected version or a reused event id undoes
-- that call alone and is reported in its result row; the others commit.
--
-- The arguments are the group flattened into arrays; Go builds them (see
-- groupArgs) and the function only checks and writes:
--   c_*      per call, the 1-based index of its last guard, request and event;
--   g_*      per guard (one per stream a call names, in stream-name order so
--            that every writer locks rows in one order): stream, the expected
--            version of the call's first request on it, and how many events
--            the call appends to it;
--   r_*      per request: its guard, its expected version, and how many of
--            the call's events on that stream come before it;
--   e_*      per event: its guard, its 1-based offset in the stream within
--            the call, and the row itself.
-- Expected versions: -1 no stream, -2 any, else the exact version.
--
-- One row per call: status 0 written, 1 wrong version, 2 an event id already
-- in the log (Go then decides between a retry and a misuse); detail says why;
-- tx and seq are the position of the call's last event; starts the version
-- of each of its guards' streams before the call.
-- +goose StatementBegin
CREATE FUNCTION evident_append(
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

-- +goose Down
DROP FUNCTION evident_append(int[], int[], int[], text[], bigint[], bigint[], int[], bigint[], bigint[],
    int[], bigint[], uuid[], text[], bytea[], bytea[]);
