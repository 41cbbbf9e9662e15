package projections

import (
	"context"
	"errors"
	"fmt"

	"evident/eventstore"
	"evident/readmodels"
)

// Errors of the parked-event operations.
var (
	// ErrUnknownWorker means no projection or workflow has that name here.
	ErrUnknownWorker = errors.New("projections: no projection or workflow of that name")
	// ErrStillFailing means a retried parked event failed again; it stays parked.
	ErrStillFailing = errors.New("projections: parked event failed again")
)

// streamReader reads one stream; every event store has it, the Runner's
// Source does not need it for its own work.
type streamReader interface {
	ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error)
}

// RetryParked handles a parked event again, now and out of log order: a
// workflow's Handle runs again (workflows are idempotent); a projection's
// Apply runs in one transaction with the unparking (projections are
// idempotent and version-guarded, so an event whose rows have moved on
// changes nothing — rebuild such a projection instead). On success the event
// is unparked; on failure it stays parked and ErrStillFailing is returned.
func (r *Runner) RetryParked(ctx context.Context, name, eventID string) error {
	w, err := r.worker(name)
	if err != nil {
		return err
	}
	p, err := r.rm.ParkedEvent(ctx, name, eventID)
	if err != nil {
		return err
	}
	ev, err := r.parkedRecord(ctx, p)
	if err != nil {
		return err
	}
	if w.proj != nil {
		err = r.rm.Update(ctx, func(tx *readmodels.Tx) error {
			if err := w.proj.Apply(tx, ev); err != nil {
				return &applyError{err: err}
			}
			return tx.Unpark(name, eventID)
		})
		var ae *applyError
		if errors.As(err, &ae) {
			return fmt.Errorf("%w: %w", ErrStillFailing, ae.err)
		}
	} else {
		if err := w.react.Handle(ctx, ev); err != nil {
			return fmt.Errorf("%w: %w", ErrStillFailing, err)
		}
		err = r.rm.Unpark(ctx, name, eventID)
	}
	if err != nil {
		return err
	}
	r.unparked(w)
	r.log.Info("projections: parked event retried", "projection", name, "position", p.Position.String(), "event_type", p.EventType)
	return nil
}

// SkipParked gives up on a parked event: it is unparked without being
// handled. The event itself stays in the log.
func (r *Runner) SkipParked(ctx context.Context, name, eventID string) error {
	w, err := r.worker(name)
	if err != nil {
		return err
	}
	if err := r.rm.Unpark(ctx, name, eventID); err != nil {
		return err
	}
	r.unparked(w)
	r.log.Warn("projections: parked event skipped", "projection", name, "event_id", eventID)
	return nil
}

func (r *Runner) worker(name string) (*worker, error) {
	for _, w := range r.workers {
		if w.name == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownWorker, name)
}

func (r *Runner) unparked(w *worker) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w.parked > 0 {
		w.parked--
	}
}

// parkedRecord reads a parked event back from its stream.
func (r *Runner) parkedRecord(ctx context.Context, p readmodels.ParkedEvent) (eventstore.RecordedEvent, error) {
	sr, ok := r.src.(streamReader)
	if !ok || p.Stream == "" || p.Version < 0 {
		return eventstore.RecordedEvent{}, fmt.Errorf("projections: parked event %s cannot be read back", p.EventID)
	}
	evs, err := sr.ReadStream(ctx, p.Stream, p.Version)
	if err != nil {
		return eventstore.RecordedEvent{}, err
	}
	if len(evs) == 0 || evs[0].ID.String() != p.EventID {
		return eventstore.RecordedEvent{}, fmt.Errorf("projections: parked event %s is not at %s version %d", p.EventID, p.Stream, p.Version)
	}
	return evs[0], nil
}
