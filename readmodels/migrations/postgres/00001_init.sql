-- Read models of Evident, PostgreSQL flavour. Keep in step with ../sqlite.
-- Times are unix microseconds (UTC), ids TEXT, JSON TEXT.

-- +goose Up
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    name         TEXT NOT NULL,
    roles        TEXT NOT NULL,
    status       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    activated_at BIGINT,
    deleted_at   BIGINT,
    position     TEXT NOT NULL
);
CREATE INDEX users_status_id ON users (status, id);
CREATE INDEX users_email_id ON users (email, id);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    status     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT,
    end_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user_created ON sessions (user_id, created_at, id);
CREATE INDEX sessions_status_expires ON sessions (status, expires_at);

CREATE TABLE activation_tokens (
    token_hash   TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX activation_tokens_user_created ON activation_tokens (user_id, created_at, token_hash);
CREATE INDEX activation_tokens_status_expires ON activation_tokens (status, expires_at);

CREATE TABLE audit (
    event_id       TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    user_id        TEXT,
    actor_id       TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    details        TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    occurred_at    BIGINT NOT NULL,
    pos_commit     BIGINT NOT NULL,
    pos_prepare    BIGINT NOT NULL,
    UNIQUE (pos_commit, pos_prepare)
);
CREATE INDEX audit_user_pos ON audit (user_id, pos_commit, pos_prepare);
CREATE INDEX audit_actor_pos ON audit (actor_id, pos_commit, pos_prepare);
CREATE INDEX audit_action_pos ON audit (action, pos_commit, pos_prepare);
CREATE INDEX audit_occurred_pos ON audit (occurred_at, pos_commit, pos_prepare);

CREATE TABLE checkpoints (
    name       TEXT PRIMARY KEY,
    position   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE parked_events (
    projection TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    position   TEXT NOT NULL,
    event_type TEXT NOT NULL,
    error      TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  BIGINT NOT NULL,
    PRIMARY KEY (projection, event_id)
);

CREATE TABLE credentials (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX credentials_user ON credentials (user_id);

CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER NOT NULL DEFAULT 0,
    body        BYTEA,
    created_at  BIGINT NOT NULL,
    done        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (scope, key)
);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE credentials;
DROP TABLE parked_events;
DROP TABLE checkpoints;
DROP TABLE audit;
DROP TABLE activation_tokens;
DROP TABLE sessions;
DROP TABLE users;
