package readmodels

import (
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrUnavailable means the database could not be used just now: SQLite's
// file is locked by another process past the busy timeout; PostgreSQL cannot
// be reached, is shutting down or starting up, has no connection to spare,
// or rolled the transaction back for a deadlock or a serialization failure.
// Retrying later may succeed; the request itself was not at fault.
var ErrUnavailable = errors.New("readmodels: database unavailable")

// ErrCheckpointMoved means a checkpoint was not where the writer expected it
// (Tx.AdvanceCheckpoint): another process moved or reset it. The transaction
// must be abandoned; the writer re-reads the checkpoint before going on.
var ErrCheckpointMoved = errors.New("readmodels: checkpoint moved")

// classify marks driver errors that say "try again later" as ErrUnavailable,
// keeping the driver's error in the chain for the log.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) {
			return true // even a refused login: retry, never park an event for it
		}
		// A statement prepared before a table it reads changed shape (a
		// migration; Shadow.Switch swaps in a table of the same shape, so
		// it replans silently): pgx drops the cached statement on this
		// error, so the next try prepares it again.
		if pe.Code == "0A000" && strings.Contains(pe.Message, "cached plan must not change result type") {
			return true
		}
		return pgUnavailable(pe.Code)
	}
	var (
		ce     *pgconn.ConnectError
		netErr net.Error
	)
	return errors.As(err, &ce) ||
		errors.As(err, &netErr) ||
		pgconn.SafeToRetry(err) ||
		errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, puddle.ErrClosedPool) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// pgUnavailable reports whether a SQLSTATE says the server, not the
// statement, failed.
func pgUnavailable(code string) bool {
	switch code {
	case "57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now
		"40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03": // lock_not_available
		return true
	}
	return strings.HasPrefix(code, "08") || // connection exception
		strings.HasPrefix(code, "53") // insufficient resources (too many connections, disk full)
}
