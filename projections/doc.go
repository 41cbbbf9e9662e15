// Package projections turns the event log into the read models and drives the
// workflows that react to it.
//
// A Projection applies events to readmodels tables inside a transaction the
// Runner owns; the Runner writes the projection's checkpoint in that same
// transaction, so every event takes effect exactly once (and the writes are
// idempotent anyway). A Reactor is a process manager (it lives in commands/):
// the Runner hands it each event outside any read-model transaction and saves
// its checkpoint afterwards, so reactors see every event at least once.
//
// Each projection and reactor runs in its own goroutine from its own
// checkpoint: catch-up in batches, then wait for the log to grow. A failing
// batch is retried with exponential backoff and jitter; an event that still
// fails after the retries is parked (recorded in parked_events, in the same
// transaction as the checkpoint moving past it) and the projection moves on.
// A database that cannot be reached parks nothing: that is retried forever.
//
// Projection names are checkpoint keys: renaming one means a rebuild.
package projections
