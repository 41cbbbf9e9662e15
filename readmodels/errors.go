package readmodels

import (
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrUnavailable means the database could not be used just now (SQLite: the
// file is locked by another process past the busy timeout). Retrying later
// may succeed; the request itself was not at fault.
var ErrUnavailable = errors.New("readmodels: database unavailable")

// classify marks driver errors that say "try again later" as ErrUnavailable,
// keeping the driver's error in the chain for the log.
func classify(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	return err
}
