package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"evident/eventstore"
)

// wrap adds context to a driver error and marks the ones a caller may retry
// later: eventstore.ErrUnavailable when the server cannot be reached or is
// going away, eventstore.ErrWrongVersion when it aborted the transaction to
// resolve a conflict (a retry re-reads and decides again).
func wrap(ctx context.Context, op string, err error) error {
	// A cancelled statement may surface as a driver error rather than as
	// ctx's error; keep errors.Is(err, context.Canceled) true for callers.
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("postgres eventstore: %s: %w (%w)", op, cerr, err)
	}
	switch {
	case unavailable(err):
		return fmt.Errorf("postgres eventstore: %s: %w (%w)", op, eventstore.ErrUnavailable, err)
	case conflict(err):
		return fmt.Errorf("postgres eventstore: %s: %w (%w)", op, eventstore.ErrWrongVersion, err)
	}
	return fmt.Errorf("postgres eventstore: %s: %w", op, err)
}

// unavailable reports whether err means the server could not be reached or
// dropped the connection, as opposed to refusing what was asked.
func unavailable(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch {
		case len(pgErr.Code) == 5 && pgErr.Code[:2] == "08": // connection exception
			return true
		}
		switch pgErr.Code {
		case "57P01", // admin_shutdown
			"57P02", // crash_shutdown
			"57P03", // cannot_connect_now
			"53300": // too_many_connections
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, puddle.ErrClosedPool) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err)
}

// conflict reports whether the server aborted the transaction because it
// collided with another: a serialization failure or a deadlock. Appends
// take their row locks in one order and run at READ COMMITTED, so neither
// is expected; if one happens, it is a concurrent write like any other.
func conflict(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// uniqueViolation returns the constraint a unique violation hit, or "".
func uniqueViolation(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "23505" {
		return pgErr.ConstraintName
	}
	return ""
}
