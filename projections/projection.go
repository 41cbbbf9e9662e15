package projections

import (
	"encoding/json"
	"fmt"
	"time"

	"evident/eventstore"
	"evident/readmodels"
)

// Projection keeps read-model tables in step with the log. Apply is called
// once per event in log order, inside the transaction that also moves the
// projection's checkpoint; it must not commit, and it must skip event types
// it does not know (returning nil). An error from Apply means this event
// cannot be applied now; after the retries the event is parked.
type Projection interface {
	Name() string
	Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error
}

// Tabled is a Projection that can say which tables it owns, so that a
// rebuild can clear them. Every projection of this package is one.
type Tabled interface {
	Tables() []string
}

// Projection names; they are checkpoint keys and never change.
const (
	NameUsers            = "users"
	NameSessions         = "sessions"
	NameActivationTokens = "activation_tokens"
	NameAudit            = "audit"
)

// All returns every projection of Evident.
func All() []Projection {
	return []Projection{Users(), Sessions(), ActivationTokens(), Audit()}
}

// metadata reads an event's envelope. Events without metadata read as the
// zero Metadata (schema 0 is read as the first schema by the decoders).
func metadata(ev eventstore.RecordedEvent) (eventstore.Metadata, error) {
	var md eventstore.Metadata
	if len(ev.Metadata) == 0 {
		return md, nil
	}
	if err := json.Unmarshal(ev.Metadata, &md); err != nil {
		return md, fmt.Errorf("metadata of %s: %w", ev.ID, err)
	}
	return md, nil
}

// occurredAt is when the event happened as its metadata says; the time the
// store recorded it when the metadata does not. It never reads the clock, so
// a rebuild writes the same rows as the live projection.
func occurredAt(ev eventstore.RecordedEvent, md eventstore.Metadata) time.Time {
	if !md.OccurredAt.IsZero() {
		return md.OccurredAt.UTC()
	}
	return ev.RecordedAt.UTC()
}
