-- +goose Up
-- The columns that btree indexes and ORDER BY compare, and that hold machine
-- identifiers (uuids, hashes, ASCII codes, normalised e-mail addresses,
-- projection names), compare byte by byte (COLLATE "C"). In a libc collation
-- other than "C" or "POSIX" (en_US.UTF-8, and C.UTF-8 too on PostgreSQL 15)
-- each comparison is a strcoll() of copies of both strings; in "C" it is a
-- memcmp, and sorts and index builds may use abbreviated keys. Every
-- projection batch inserts into these indexes (four of audit's six), and a
-- rebuild builds them all.
--
-- No answer changes: equality is byte equality in every deterministic
-- collation, and what is ordered by these columns (ids and hashes, as the
-- keyset cursors' tie-breakers) is ordered for paging, not for people, and
-- in the same collation as the cursors compare. A parameter compared with a
-- column takes the column's collation, so the indexes still serve.
--
-- Left in the database's collation: users.name (people's words, should a
-- list ever sort by it), the JSON and free-text columns, and the text
-- columns no index holds and nothing orders by, where the collation is
-- never consulted. SQLite compares text bytewise (BINARY) already: its
-- migrations need no counterpart.
--
-- Heaps are not rewritten; the indexes on these columns are rebuilt, under
-- an ACCESS EXCLUSIVE lock on each table for as long as that takes. A
-- process running meanwhile gets one "cached plan must not change result
-- type" per prepared statement that returns such a column (pgx then drops
-- it and prepares again). Shadow tables (CREATE TABLE … (LIKE … INCLUDING
-- ALL)) copy the columns' collations, so rebuilds keep them.
ALTER TABLE users
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN email TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C";
ALTER TABLE sessions
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C";
ALTER TABLE activation_tokens
    ALTER COLUMN token_hash TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C";
ALTER TABLE audit
    ALTER COLUMN event_id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C",
    ALTER COLUMN actor_id TYPE TEXT COLLATE "C",
    ALTER COLUMN action TYPE TEXT COLLATE "C";
ALTER TABLE checkpoints
    ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE parked_events
    ALTER COLUMN projection TYPE TEXT COLLATE "C",
    ALTER COLUMN event_id TYPE TEXT COLLATE "C";
ALTER TABLE credentials
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN user_id TYPE TEXT COLLATE "C";
ALTER TABLE idempotency_keys
    ALTER COLUMN scope TYPE TEXT COLLATE "C",
    ALTER COLUMN key TYPE TEXT COLLATE "C";

-- +goose Down
ALTER TABLE idempotency_keys
    ALTER COLUMN scope TYPE TEXT COLLATE "default",
    ALTER COLUMN key TYPE TEXT COLLATE "default";
ALTER TABLE credentials
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN user_id TYPE TEXT COLLATE "default";
ALTER TABLE parked_events
    ALTER COLUMN projection TYPE TEXT COLLATE "default",
    ALTER COLUMN event_id TYPE TEXT COLLATE "default";
ALTER TABLE checkpoints
    ALTER COLUMN name TYPE TEXT COLLATE "default";
ALTER TABLE audit
    ALTER COLUMN event_id TYPE TEXT COLLATE "default",
    ALTER COLUMN user_id TYPE TEXT COLLATE "default",
    ALTER COLUMN actor_id TYPE TEXT COLLATE "default",
    ALTER COLUMN action TYPE TEXT COLLATE "default";
ALTER TABLE activation_tokens
    ALTER COLUMN token_hash TYPE TEXT COLLATE "default",
    ALTER COLUMN user_id TYPE TEXT COLLATE "default",
    ALTER COLUMN status TYPE TEXT COLLATE "default";
ALTER TABLE sessions
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN user_id TYPE TEXT COLLATE "default",
    ALTER COLUMN status TYPE TEXT COLLATE "default";
ALTER TABLE users
    ALTER COLUMN id TYPE TEXT COLLATE "default",
    ALTER COLUMN email TYPE TEXT COLLATE "default",
    ALTER COLUMN status TYPE TEXT COLLATE "default";
