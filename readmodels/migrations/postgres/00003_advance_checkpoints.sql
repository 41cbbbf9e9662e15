-- +goose Up
-- Moves several checkpoints, each only from where its writer last left it,
-- and fails the statement (and with it the transaction) when any was not
-- there: SQLSTATE EV001, the names of those that moved in DETAIL, one per
-- line. A zero from ('0') means "no checkpoint yet". Failing, rather than
-- reporting fewer rows, lets a batched transaction (Store.UpdateBatched) send
-- the move, the rows and COMMIT at once: a moved checkpoint stops the commit.
-- +goose StatementBegin
CREATE FUNCTION evident_advance_checkpoints(names TEXT[], froms TEXT[], tos TEXT[], at BIGINT)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    moved TEXT[];
BEGIN
    WITH v AS (
        SELECT * FROM unnest(names, froms, tos) AS v(name, from_pos, to_pos)
    ), u AS (
        UPDATE checkpoints c SET position = v.to_pos, updated_at = at
        FROM v WHERE v.from_pos <> '0' AND c.name = v.name AND c.position = v.from_pos
        RETURNING c.name
    ), i AS (
        INSERT INTO checkpoints (name, position, updated_at)
        SELECT v.name, v.to_pos, at FROM v WHERE v.from_pos = '0'
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
        WHERE checkpoints.position = '0'
        RETURNING checkpoints.name
    )
    SELECT array_agg(v.name ORDER BY v.name) INTO moved FROM v
    WHERE v.name NOT IN (SELECT name FROM u UNION ALL SELECT name FROM i);
    IF moved IS NOT NULL THEN
        RAISE EXCEPTION 'checkpoints moved: %', array_to_string(moved, ', ')
            USING ERRCODE = 'EV001', DETAIL = array_to_string(moved, E'\n');
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION evident_advance_checkpoints(TEXT[], TEXT[], TEXT[], BIGINT);
