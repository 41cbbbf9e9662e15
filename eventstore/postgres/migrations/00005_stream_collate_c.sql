-- +goose Up
-- Stream names compare byte by byte (COLLATE "C"). Every append inserts into
-- the UNIQUE (stream, version) index and every stream read searches it. In
-- a libc collation other than "C" or "POSIX" (en_US.UTF-8, and C.UTF-8 too
-- on PostgreSQL 15) each comparison on the way is a strcoll() of copies of
-- both strings; in "C" it is a memcmp, and sorts may use abbreviated keys.
-- Stream names are identifiers ("user-<uuid>"): nothing shows them to
-- people in the collation's order, and equality, which is all the queries
-- ask of them, is byte equality in every deterministic collation, so no
-- statement answers differently. A parameter or unnested array compared
-- with the column takes the column's collation, so the index still serves
-- `stream = $1` and the set appends' `x.stream = ev.stream`. Advisory lock
-- keys (hashtextextended) hash the bytes and do not change.
--
-- `type` stays as it is: no index holds it and nothing orders by it.
--
-- The heap is not rewritten; the index is rebuilt, under an ACCESS
-- EXCLUSIVE lock on events for as long as that takes. A process running
-- meanwhile gets one "cached plan must not change result type" per prepared
-- statement that returns the column (pgx then drops it and prepares again).
ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE "C";

-- +goose Down
ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE "default";
