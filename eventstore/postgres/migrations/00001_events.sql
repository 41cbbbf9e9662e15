-- +goose Up
-- The event log. Its order is (tx, seq): tx is the id of the transaction that
-- wrote the row (xid8, 64-bit and epoch-extended, so it never wraps) and seq a
-- per-row identity. See Store in postgres.go for why readers only read below
-- the oldest transaction still running.
CREATE TABLE events (
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigint      GENERATED ALWAYS AS IDENTITY,
    event_id    uuid        NOT NULL,
    stream      text        NOT NULL CHECK (stream <> ''),
    version     bigint      NOT NULL CHECK (version >= 0),
    type        text        NOT NULL CHECK (type <> ''),
    -- bytea, not jsonb (which re-encodes) nor json/text (which reject bytes
    -- that are not valid UTF-8): the log returns exactly the bytes appended.
    data        bytea       NOT NULL,
    metadata    bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- The log order, and the index ReadAll walks.
    CONSTRAINT events_pkey PRIMARY KEY (tx, seq),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Also the index stream reads use.
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

-- One row per stream holding its current version: the row an append locks to
-- check its expected version, so concurrent appends to one stream serialise
-- on it instead of racing on MAX(version).
CREATE TABLE streams (
    stream  text   NOT NULL,
    version bigint NOT NULL CHECK (version >= 0),
    CONSTRAINT streams_pkey PRIMARY KEY (stream)
);

-- +goose Down
DROP TABLE streams;
DROP TABLE events;
