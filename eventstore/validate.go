package eventstore

import (
	"fmt"

	"github.com/google/uuid"
)

// CheckAppend checks an append before any I/O: at least one request, each
// naming a stream, holding events with ids and types or being a check (no
// events, an exact expected version or NoStream), at least one event in all,
// no event id twice, and within the adapter's limits (events, and bytes of
// data plus metadata).
// Faults wrap ErrInvalid; an append over a limit wraps ErrTooLarge.
func CheckAppend(reqs []AppendRequest, maxEvents, maxBytes int) error {
	if len(reqs) == 0 {
		return fmt.Errorf("append without requests: %w", ErrInvalid)
	}
	var events, size int
	ids := make(map[uuid.UUID]struct{})
	for i, r := range reqs {
		switch {
		case r.Stream == "":
			return fmt.Errorf("request %d: empty stream name: %w", i, ErrInvalid)
		case len(r.Events) == 0 && r.Expected < NoStream:
			return fmt.Errorf("append to %q: no events, and no version to check: %w", r.Stream, ErrInvalid)
		case r.Expected < Any:
			return fmt.Errorf("append to %q: bad expected version %d: %w", r.Stream, r.Expected, ErrInvalid)
		}
		for j, e := range r.Events {
			switch {
			case e.ID == uuid.Nil:
				return fmt.Errorf("append to %q: event %d has no id: %w", r.Stream, j, ErrInvalid)
			case e.Type == "":
				return fmt.Errorf("append to %q: event %s has no type: %w", r.Stream, e.ID, ErrInvalid)
			}
			if _, dup := ids[e.ID]; dup {
				return fmt.Errorf("append to %q: event id %s appears twice: %w", r.Stream, e.ID, ErrInvalid)
			}
			ids[e.ID] = struct{}{}
			size += len(e.Data) + len(e.Metadata)
		}
		events += len(r.Events)
	}
	if events == 0 {
		return fmt.Errorf("append of checks only, no events: %w", ErrInvalid)
	}
	if events > maxEvents {
		return fmt.Errorf("%d events in one append, limit %d: %w", events, maxEvents, ErrTooLarge)
	}
	if size > maxBytes {
		return fmt.Errorf("%d bytes in one append, limit %d: %w", size, maxBytes, ErrTooLarge)
	}
	return nil
}

// FirstEvent is the id of the first event an append writes, the one a retry
// is recognised by; CheckAppend makes sure there is one.
func FirstEvent(reqs []AppendRequest) uuid.UUID {
	for _, r := range reqs {
		if len(r.Events) > 0 {
			return r.Events[0].ID
		}
	}
	return uuid.Nil
}
