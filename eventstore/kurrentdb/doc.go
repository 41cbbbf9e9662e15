// Package kurrentdb is the eventstore adapter for KurrentDB and EventStoreDB,
// through github.com/kurrent-io/KurrentDB-Client-Go. It owns the translation
// between Evident's port and the server: connection strings, expected
// revisions, commit/prepare positions, the server's errors (mapped onto the
// eventstore sentinels, so that callers never import the client), the
// server-side filter on Evident's own streams when reading and subscribing to
// $all, and resubscribing when a subscription drops. Nothing else belongs
// here: no schema, no projections, no reading of the environment.
//
// What it needs of the server: single-stream appends, stream reads and
// filtered subscriptions to $all work on EventStoreDB 20.6 and later, as the
// client does. ReadAll ends at the head of the log as soon as the server says
// it has caught up (EventStoreDB 23.10 and later, every KurrentDB); older
// servers end it after Options.CatchUpIdle of silence instead. An Append of
// several streams at once, which the e-mail uniqueness guard relies on, uses
// the multi-stream append of KurrentDB 25.1 and later; on older servers it
// fails with ErrMultiStreamUnsupported, an eventstore.ErrInvalid.
package kurrentdb
