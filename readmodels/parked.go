package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

const parkedColumns = `projection, position, event_id, event_type, error, attempts, parked_at, stream, version`

func scanParked(r scanner) (ParkedEvent, error) {
	var (
		p   ParkedEvent
		pos string
		at  int64
	)
	if err := r.Scan(&p.Projection, &pos, &p.EventID, &p.EventType, &p.Error, &p.Attempts, &at, &p.Stream, &p.Version); err != nil {
		return p, fmt.Errorf("readmodels: parked: %w", classify(err))
	}
	var err error
	if p.Position, err = parsePosition(pos); err != nil {
		return p, err
	}
	p.ParkedAt = fromMicros(at)
	return p, nil
}

// ParkedEvent returns one parked event of a projection or workflow, or ErrNotFound.
func (s *Store) ParkedEvent(ctx context.Context, projection, eventID string) (ParkedEvent, error) {
	p, err := scanParked(s.r.QueryRowContext(ctx, `SELECT `+parkedColumns+`
		FROM parked_events WHERE projection = $1 AND event_id = $2`, projection, eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, err
}

// Unpark removes a parked event once it has been retried or an operator
// decided to skip it. A missing one is ErrNotFound.
func (s *Store) Unpark(ctx context.Context, projection, eventID string) error {
	return s.Update(ctx, func(tx *Tx) error { return tx.Unpark(projection, eventID) })
}

// Unpark removes a parked event in the transaction that handled it again.
func (tx *Tx) Unpark(projection, eventID string) error {
	res, err := tx.execResult(`DELETE FROM parked_events WHERE projection = $1 AND event_id = $2`, projection, eventID)
	if err != nil {
		return fmt.Errorf("readmodels: unpark %s of %s: %w", eventID, projection, classify(err))
	}
	return affectedOne(res, "parked event "+eventID+" of "+projection)
}
