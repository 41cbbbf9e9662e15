-- +goose Up
-- The event log. position is the global position: AUTOINCREMENT never reuses
-- a value, even after the newest row is deleted, so a checkpoint can never
-- point at a position that later means another event.
CREATE TABLE events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL UNIQUE,
    stream      TEXT    NOT NULL CHECK (stream <> ''),
    version     INTEGER NOT NULL CHECK (version >= 0),
    type        TEXT    NOT NULL CHECK (type <> ''),
    data        TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL,
    -- Also the index stream reads use: (stream, version) is exactly their
    -- lookup and order, so a second index would only slow appends.
    UNIQUE (stream, version)
);

-- +goose Down
DROP TABLE events;
