// Package readmodels owns Evident's read side: table schemas, migrations,
// checkpoints and the query functions the API uses. It also holds the two
// tables that are not projections and are never rebuilt: credentials
// (password hashes, kept out of the log) and idempotency keys.
//
// Reads go to the read pool; every write goes through the write pool, and a
// projection's rows and its checkpoint are written in one transaction
// (Store.Update). The SQL is kept portable between SQLite and PostgreSQL:
// $N placeholders, ON CONFLICT upserts, times as BIGINT unix microseconds
// (UTC), ids as TEXT, JSON as TEXT. Identifiers compare bytewise: SQLite's
// BINARY, and on PostgreSQL COLLATE "C" on the identifier columns indexes hold
// (migration 00004). Migrations are per dialect, embedded, and run by goose
// with their own version table (goose_readmodels).
//
// On PostgreSQL the pools come from pgx v5 (github.com/jackc/pgx/v5/stdlib).
// Several processes may then share the database: Leases (session advisory
// locks) decide which of them runs each projection, Tx.AdvanceCheckpoint
// keeps a late writer from applying a batch twice, and a NOTIFY sent in
// every transaction that moves a checkpoint wakes the waiters of every
// process (Listen, CheckpointsChanged). A rebuild fills shadow tables
// (Shadow: <table>_rebuild, written through Shadow.Tx) while the live ones
// serve, and swaps them in in one transaction with the checkpoint.
//
// Driver errors never leave this package: callers see ErrNotFound,
// ErrConflict, ErrBadCursor, ErrCheckpointMoved, ErrShadowGone, ErrUnavailable (the
// database, not the request, failed: SQLite busy, PostgreSQL unreachable,
// restarting or out of connections) or a wrapped error.
package readmodels
