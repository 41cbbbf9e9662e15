// Package commands owns the write side: load a stream, fold it, decide, and
// append with the expected version read, retrying only on a version conflict.
// It stamps every event's metadata (UUIDv7 id, actor, correlation, causation,
// request id, UTC time). The workflows that react to events (session cleanup,
// expiry) live here too: they issue commands and never touch read tables.
//
// Secrets never reach the log: passwords go to the credential store as bcrypt
// hashes referenced by an id, and tokens are recorded as SHA-256 hashes.
package commands
