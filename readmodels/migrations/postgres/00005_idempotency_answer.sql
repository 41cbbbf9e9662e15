-- +goose Up
-- A replay gives back the first answer's own headers (ETag, Location,
-- Content-Type…, a JSON object; NULL on rows kept before, which replay
-- without them), and a key names the session whose request claimed it, so
-- that the holder of that session's token gets its answer back even after
-- the request closed the session ('' when anonymous, or kept before).
ALTER TABLE idempotency_keys ADD COLUMN headers TEXT;
ALTER TABLE idempotency_keys ADD COLUMN session_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN session_id;
ALTER TABLE idempotency_keys DROP COLUMN headers;
