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
// Every checkpoint moves with Tx.AdvanceCheckpoint, which refuses to move a
// checkpoint that is not where the batch started. So when two processes
// apply the same events (a leader that lost its lease without noticing, and
// its successor), only the first to commit wins; the other's batch is
// rolled back and it starts over from the stored checkpoint. Exactly-once
// therefore never rests on leases alone.
//
// Several processes may share one PostgreSQL database. Options.Leases then
// makes each projection and reactor run in one of them at a time (the
// others stand by and take over when it dies or its lease is lost), and
// WaitFor on any of them waits for the projections wherever they run. On
// SQLite there are no leases: one process owns the file.
//
// Projection names are checkpoint keys and lease names: renaming one means
// a rebuild.
package projections
