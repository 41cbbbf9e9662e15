// Package eventstore is the port between Evident and the append-only log that is
// its system of record. Adapters (sqlite, postgres, kurrentdb) live in
// sub-packages and translate their own errors into the sentinels declared here.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Sentinel errors every adapter maps its own failures onto.
var (
	// ErrWrongVersion means a stream was not at the version the append expected.
	ErrWrongVersion = errors.New("eventstore: wrong expected version")
	// ErrTooLarge means one append exceeds what the store accepts in one write.
	ErrTooLarge = errors.New("eventstore: append too large")
	// ErrInvalid means the request itself is malformed (empty stream name, no events).
	ErrInvalid = errors.New("eventstore: invalid append")
	// ErrUnavailable means the store could not be reached; the caller may retry later.
	ErrUnavailable = errors.New("eventstore: store unavailable")
)

// Expected stream versions. Versions are zero-based revisions of a stream's
// last event; a stream with no events is at NoStream.
const (
	Any      int64 = -2 // append whatever the stream's version is
	NoStream int64 = -1 // the stream must not exist yet
)

// Position is the global position of an event in the log. SQL stores use one
// sequence (Commit == Prepare); KurrentDB has a commit/prepare pair. The zero
// Position is "before the first event".
type Position struct {
	Commit  uint64
	Prepare uint64
}

// At returns the position of a store whose log is one sequence.
func At(seq uint64) Position { return Position{Commit: seq, Prepare: seq} }

// IsZero reports whether p is the start of the log.
func (p Position) IsZero() bool { return p.Commit == 0 && p.Prepare == 0 }

// Less reports whether p comes before q in the log.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

// String is the one encoding of a Position, used in checkpoints, cursors and
// API responses: "N" when commit and prepare agree, "C/P" otherwise.
func (p Position) String() string {
	if p.Commit == p.Prepare {
		return strconv.FormatUint(p.Commit, 10)
	}
	return strconv.FormatUint(p.Commit, 10) + "/" + strconv.FormatUint(p.Prepare, 10)
}

// ParsePosition reads what Position.String wrote.
func ParsePosition(s string) (Position, error) {
	c, p, pair := strings.Cut(s, "/")
	commit, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("eventstore: bad position %q", s)
	}
	if !pair {
		return At(commit), nil
	}
	prepare, err := strconv.ParseUint(p, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("eventstore: bad position %q", s)
	}
	return Position{Commit: commit, Prepare: prepare}, nil
}

// MarshalJSON writes the position as its string form.
func (p Position) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads the string form.
func (p *Position) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParsePosition(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// EventData is an event about to be appended.
type EventData struct {
	ID       uuid.UUID
	Type     string
	Data     json.RawMessage
	Metadata json.RawMessage
}

// RecordedEvent is an event as the log holds it.
type RecordedEvent struct {
	ID         uuid.UUID
	Stream     string
	Type       string
	Version    int64
	Position   Position
	Data       json.RawMessage
	Metadata   json.RawMessage
	RecordedAt time.Time
}

// AppendRequest asks for events to be appended to one stream at an expected version.
//
// A request with no events is a check: it writes nothing, and the append it
// is part of succeeds only if its stream is at Expected (an exact version, or
// NoStream) when the append is written. It lets a decision that read one
// stream write to another, e.g. a login that found its user active, which
// must not land after the user was deactivated. An append needs at least one
// request with events.
type AppendRequest struct {
	Stream   string
	Expected int64
	Events   []EventData
}

// AppendResult tells where an append landed.
type AppendResult struct {
	// Position is the global position of the last event written.
	Position Position
	// Versions holds each request's stream version after the append, in request order.
	Versions []int64
}

// Store is the contract every adapter meets; eventstoretest.Run checks it.
// Consumers declare the smaller interfaces they need.
type Store interface {
	// Append writes every request atomically: all streams or none. Each request
	// is checked against its expected version and fails the whole append with
	// ErrWrongVersion. An append whose first event id is already in the log is
	// taken as a retry: nothing is written and the earlier result is returned.
	Append(ctx context.Context, reqs ...AppendRequest) (AppendResult, error)
	// ReadStream returns a stream's events from version from on; a stream
	// that does not exist has none. Every read error is returned.
	ReadStream(ctx context.Context, stream string, from int64) ([]RecordedEvent, error)
	// ReadAll returns up to limit events strictly after position after, in log
	// order. It never returns an event whose position a later call could
	// precede with a lower one (no skipped commits).
	ReadAll(ctx context.Context, after Position, limit int) ([]RecordedEvent, error)
	// Wait returns when events after position after may be readable, or when
	// ctx ends. It may return early; callers re-read.
	Wait(ctx context.Context, after Position) error
	// Close releases the store.
	Close() error
}
