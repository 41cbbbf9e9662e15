package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"evident/eventstore"
	"evident/internal/sqlitedb"
)

// Limits of one Append. A larger append fails with eventstore.ErrTooLarge
// before anything is written: one write transaction holds the file's only
// write lock, and a huge one would stall every other writer.
const (
	// MaxAppendEvents is the most events one Append may write, over all requests.
	MaxAppendEvents = 5000
	// MaxAppendBytes is the most data plus metadata bytes one Append may write.
	MaxAppendBytes = 8 << 20
)

// pollInterval bounds how long Wait sleeps without a wake-up from this
// process, so that it also sees appends made by other processes (the CLI)
// writing the same file.
const pollInterval = 500 * time.Millisecond

// versionTable is goose's bookkeeping table for this package's migrations,
// separate from the one the read models keep in the same file.
const versionTable = "goose_eventstore"

// recordedAtLayout is fixed-width so the text column sorts in time order.
const recordedAtLayout = "2006-01-02T15:04:05.000000000Z07:00"

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the event log in SQLite.
//
// Positions need no gap handling here, unlike on PostgreSQL: SQLite has one
// writer at a time and every write transaction begins IMMEDIATE, so the
// transaction that takes an AUTOINCREMENT position commits before any other
// can take the next one. Positions therefore become visible in order; once a
// reader sees position N, no event with a lower position can appear later,
// and "position > after" never skips a commit.
type Store struct {
	db *sqlitedb.DB

	mu      sync.Mutex
	changed chan struct{} // closed and replaced after every commit
}

var _ eventstore.Store = (*Store)(nil)

// New returns a Store on db, creating or migrating the events table first.
// The Store does not own db: Close leaves it open for the caller to close.
func New(db *sqlitedb.DB) (*Store, error) {
	if db == nil || db.Write == nil || db.Read == nil {
		return nil, errors.New("sqlite eventstore: nil database")
	}
	if err := migrate(context.Background(), db); err != nil {
		return nil, err
	}
	return &Store{db: db, changed: make(chan struct{})}, nil
}

func migrate(ctx context.Context, db *sqlitedb.DB) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite eventstore: load migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db.Write, fsys,
		goose.WithTableName(versionTable),
		// Only this package's SQL files: never Go migrations another package
		// registered globally.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("sqlite eventstore: load migrations: %w", err)
	}
	// p.Close would close db.Write, which the caller owns; the provider
	// holds nothing else.
	if _, err := p.Up(ctx); err != nil {
		return wrap(ctx, "migrate", err)
	}
	return nil
}

// Close wakes every Wait in progress. It does not close the *sqlitedb.DB
// given to New: the caller opened it, shares it, and closes it.
func (s *Store) Close() error {
	s.notify()
	return nil
}

// Count returns the number of events in the log.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.Read.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		return 0, wrap(ctx, "count events", err)
	}
	return n, nil
}

// Append writes every request in one transaction, all or nothing.
//
// Errors: eventstore.ErrInvalid for an empty request, stream name or type, a
// nil or repeated event id, or an expected version below eventstore.Any;
// eventstore.ErrTooLarge past MaxAppendEvents or MaxAppendBytes;
// eventstore.ErrWrongVersion when any stream is not at its expected version;
// eventstore.ErrUnavailable when the file stays locked by another process
// past the busy timeout. When the first event id is already in the log the
// append is a retry: nothing is written and the earlier result is returned,
// or ErrInvalid if the rest of the request does not match what was written.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if err := eventstore.CheckAppend(reqs, MaxAppendEvents, MaxAppendBytes); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: %w", err)
	}

	tx, err := s.db.Write.BeginTx(ctx, nil)
	if err != nil {
		return eventstore.AppendResult{}, wrap(ctx, "begin append", err)
	}
	// A no-op after Commit.
	defer func() { _ = tx.Rollback() }()

	// The retry check runs inside the write transaction, so a retry racing
	// its own first attempt sees either all of it or none of it.
	if res, found, err := earlierResult(ctx, tx, reqs); err != nil || found {
		return res, err
	}

	ins, err := tx.PrepareContext(ctx, `INSERT INTO events
		(event_id, stream, version, type, data, metadata, recorded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`)
	if err != nil {
		return eventstore.AppendResult{}, wrap(ctx, "prepare append", err)
	}
	defer ins.Close()

	recordedAt := time.Now().UTC().Format(recordedAtLayout)
	res := eventstore.AppendResult{Versions: make([]int64, len(reqs))}
	// Several requests may name one stream; each sees the ones before it.
	current := make(map[string]int64, len(reqs))
	var last int64
	for i, r := range reqs {
		v, ok := current[r.Stream]
		if !ok {
			if v, err = streamVersion(ctx, tx, r.Stream); err != nil {
				return eventstore.AppendResult{}, err
			}
		}
		if r.Expected != eventstore.Any && r.Expected != v {
			return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: append to %q: expected version %d, stream is at %d: %w",
				r.Stream, r.Expected, v, eventstore.ErrWrongVersion)
		}
		for _, e := range r.Events {
			v++
			out, err := ins.ExecContext(ctx, e.ID.String(), r.Stream, v, e.Type,
				string(e.Data), string(e.Metadata), recordedAt)
			if err != nil {
				return eventstore.AppendResult{}, insertError(ctx, r.Stream, e.ID, err)
			}
			if last, err = out.LastInsertId(); err != nil {
				return eventstore.AppendResult{}, wrap(ctx, "append: read position", err)
			}
		}
		current[r.Stream] = v
		res.Versions[i] = v
	}
	if err := tx.Commit(); err != nil {
		return eventstore.AppendResult{}, wrap(ctx, "commit append", err)
	}
	s.notify()
	res.Position = eventstore.At(uint64(last))
	return res, nil
}

// earlierResult finds an append already written with the same event ids.
// found is false when the first event id is not in the log. The log keeps no
// record of where one append ended, so a request counts as a retry when every
// one of its events is in the log, in its stream, at consecutive versions;
// anything else that reuses the first id is ErrInvalid.
func earlierResult(ctx context.Context, tx *sql.Tx, reqs []eventstore.AppendRequest) (res eventstore.AppendResult, found bool, err error) {
	q, err := tx.PrepareContext(ctx, `SELECT stream, version, position FROM events WHERE event_id = $1`)
	if err != nil {
		return res, false, wrap(ctx, "prepare retry check", err)
	}
	defer q.Close()

	var (
		stream        string
		version, last int64
	)
	lookup := func(id uuid.UUID) (bool, error) {
		var pos int64
		err := q.QueryRowContext(ctx, id.String()).Scan(&stream, &version, &pos)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, wrap(ctx, "retry check", err)
		}
		last = max(last, pos)
		return true, nil
	}

	first := reqs[0].Events[0].ID
	if ok, err := lookup(first); err != nil || !ok {
		return res, false, err
	}
	mismatch := func(id uuid.UUID) error {
		return fmt.Errorf("sqlite eventstore: event %s is in the log but this append is not a retry of the one that wrote it (event %s differs): %w",
			first, id, eventstore.ErrInvalid)
	}
	res.Versions = make([]int64, len(reqs))
	for i, r := range reqs {
		var prev int64
		for j, e := range r.Events {
			ok, err := lookup(e.ID)
			if err != nil {
				return eventstore.AppendResult{}, false, err
			}
			if !ok || stream != r.Stream || (j > 0 && version != prev+1) {
				return eventstore.AppendResult{}, false, mismatch(e.ID)
			}
			prev = version
		}
		res.Versions[i] = prev
	}
	res.Position = eventstore.At(uint64(last))
	return res, true, nil
}

// streamVersion is the version of the stream's last event, or NoStream.
func streamVersion(ctx context.Context, tx *sql.Tx, stream string) (int64, error) {
	var v sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM events WHERE stream = $1`, stream).Scan(&v)
	if err != nil {
		return 0, wrap(ctx, fmt.Sprintf("read version of %q", stream), err)
	}
	if !v.Valid {
		return eventstore.NoStream, nil
	}
	return v.Int64, nil
}

// insertError maps a failed insert. Within one process the version check
// above makes a (stream, version) clash impossible; it is still mapped, in
// case something outside this package wrote the table.
func insertError(ctx context.Context, stream string, id uuid.UUID, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE {
		msg := se.Error()
		switch {
		case strings.Contains(msg, "events.event_id"):
			return fmt.Errorf("sqlite eventstore: append to %q: event id %s is already in the log: %w", stream, id, eventstore.ErrInvalid)
		case strings.Contains(msg, "events.stream"):
			return fmt.Errorf("sqlite eventstore: append to %q: %w (%w)", stream, eventstore.ErrWrongVersion, err)
		}
	}
	return wrap(ctx, fmt.Sprintf("append to %q", stream), err)
}

const selectEvents = `SELECT position, event_id, stream, version, type, data, metadata, recorded_at FROM events`

// ReadStream returns the stream's events with version >= from, oldest first;
// a negative from reads from the start. A stream that does not exist has no
// events. An empty name is eventstore.ErrInvalid; every read error is
// returned, wrapping eventstore.ErrUnavailable when the file is locked.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	if stream == "" {
		return nil, fmt.Errorf("sqlite eventstore: read stream: empty stream name: %w", eventstore.ErrInvalid)
	}
	rows, err := s.db.Read.QueryContext(ctx,
		selectEvents+` WHERE stream = $1 AND version >= $2 ORDER BY version`, stream, max(from, 0))
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read stream %q", stream), err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read stream %q", stream), err)
	}
	return evs, nil
}

// ReadAll returns up to limit events with a position strictly after after,
// in position order (see Store for why that never skips a commit). A limit
// below one is eventstore.ErrInvalid.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite eventstore: read all: limit %d: %w", limit, eventstore.ErrInvalid)
	}
	if after.Commit >= math.MaxInt64 {
		return nil, nil
	}
	rows, err := s.db.Read.QueryContext(ctx,
		selectEvents+` WHERE position > $1 ORDER BY position LIMIT $2`, int64(after.Commit), limit)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	return evs, nil
}

func scanEvents(rows *sql.Rows) (_ []eventstore.RecordedEvent, err error) {
	defer func() { err = errors.Join(err, rows.Close()) }()
	var evs []eventstore.RecordedEvent
	for rows.Next() {
		var (
			e              eventstore.RecordedEvent
			pos            int64
			id, recordedAt string
			data, metadata []byte // database/sql copies into these
		)
		if err := rows.Scan(&pos, &id, &e.Stream, &e.Version, &e.Type, &data, &metadata, &recordedAt); err != nil {
			return nil, err
		}
		if e.ID, err = uuid.Parse(id); err != nil {
			return nil, fmt.Errorf("event at position %d: bad id: %w", pos, err)
		}
		if e.RecordedAt, err = time.Parse(recordedAtLayout, recordedAt); err != nil {
			return nil, fmt.Errorf("event at position %d: bad recorded_at: %w", pos, err)
		}
		e.Position = eventstore.At(uint64(pos))
		if len(data) > 0 {
			e.Data = data
		}
		if len(metadata) > 0 {
			e.Metadata = metadata
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return evs, nil
}

// Wait returns nil as soon as an event after after exists, when an append in
// this process commits, or after pollInterval (to notice other processes);
// callers re-read. It returns ctx's error when ctx ends first.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Take the channel before looking, so a commit between the look and the
	// select still wakes us.
	s.mu.Lock()
	changed := s.changed
	s.mu.Unlock()

	var exists bool
	err := s.db.Read.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM events WHERE position > $1)`, int64(min(after.Commit, math.MaxInt64))).Scan(&exists)
	if err != nil {
		return wrap(ctx, fmt.Sprintf("wait after %s", after), err)
	}
	if exists {
		return nil
	}

	timer := time.NewTimer(pollInterval)
	defer timer.Stop()
	select {
	case <-changed:
		return nil
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// notify wakes every Wait in progress.
func (s *Store) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// wrap adds context to a driver error and marks a locked or busy file as
// eventstore.ErrUnavailable, which callers may retry.
func wrap(ctx context.Context, op string, err error) error {
	// A cancelled statement may surface as SQLITE_INTERRUPT rather than as
	// ctx's error; keep errors.Is(err, context.Canceled) true for callers.
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlite eventstore: %s: %w (%w)", op, cerr, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return fmt.Errorf("sqlite eventstore: %s: %w (%w)", op, eventstore.ErrUnavailable, err)
		}
	}
	return fmt.Errorf("sqlite eventstore: %s: %w", op, err)
}
