// Package postgres is the production eventstore adapter: the event log in
// PostgreSQL (15 or later) through a caller-owned pgx pool. It owns the events
// table and its migrations (goose, version table
// goose_eventstore) and nothing else; it translates driver errors into the
// eventstore sentinels so that callers never import pgx to handle them.
//
// The hard part is the global order: see Store for how ReadAll never skips a
// transaction that commits out of order.
package postgres
