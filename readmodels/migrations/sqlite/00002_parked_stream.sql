-- +goose Up
-- Where a parked event lives, so an operator's retry can read it back.
ALTER TABLE parked_events ADD COLUMN stream TEXT NOT NULL DEFAULT '';
ALTER TABLE parked_events ADD COLUMN version BIGINT NOT NULL DEFAULT -1;

-- +goose Down
ALTER TABLE parked_events DROP COLUMN version;
ALTER TABLE parked_events DROP COLUMN stream;
