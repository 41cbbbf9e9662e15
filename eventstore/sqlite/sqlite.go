package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"evident/eventstore"
	"evident/eventstore/internal/arena"
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
//
// Appends are committed in groups (see Append): a commit is one fsync
// (synchronous=FULL), and concurrent appends share it.
type Store struct {
	db    *sqlitedb.DB
	stmts statements

	mu      sync.Mutex
	changed chan struct{} // closed and replaced after every commit

	qmu     sync.Mutex
	queue   []*pending     // appends waiting for a group, in arrival order
	running bool           // a committer goroutine is draining queue
	closed  bool           // Close was called: Append refuses new work
	drained sync.WaitGroup // the committer goroutine, while it runs

	commits atomic.Uint64 // committed append transactions, for tests
}

var _ eventstore.Store = (*Store)(nil)

// maxGroupCalls is the most Append calls one group commits together. A
// group also holds no more than MaxAppendEvents events and MaxAppendBytes
// bytes (one call always fits), so it holds the write lock no longer than
// one maximal Append would.
const maxGroupCalls = 128

// statements are the store's statements, prepared once: modernc.org/sqlite
// would otherwise parse each one on every call.
// database/sql prepares them on the write connection the first time a
// transaction uses them there, and reuses them after.
type statements struct {
	insert, lookup, version, savepoint, release, rollbackTo *sql.Stmt
	// On the read pool, prepared on each of its connections as it is used.
	// Reads keep working after Close, as they always have: these are not
	// closed with the store, but with the *sqlitedb.DB's connections.
	readStream, readAll, exists *sql.Stmt
}

func prepare(ctx context.Context, db *sqlitedb.DB) (st statements, err error) {
	for _, p := range []struct {
		dst  **sql.Stmt
		pool *sql.DB
		sql  string
	}{
		{&st.insert, db.Write, `INSERT INTO events
		(event_id, stream, version, type, data, metadata, recorded_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`},
		{&st.lookup, db.Write, `SELECT stream, version, position FROM events WHERE event_id = $1`},
		{&st.version, db.Write, `SELECT MAX(version) FROM events WHERE stream = $1`},
		{&st.savepoint, db.Write, `SAVEPOINT append_request`},
		{&st.release, db.Write, `RELEASE append_request`},
		{&st.rollbackTo, db.Write, `ROLLBACK TO append_request`},
		{&st.readStream, db.Read, selectStreamEvents + ` WHERE stream = $1 AND version >= $2 ORDER BY version`},
		{&st.readAll, db.Read, selectEvents + ` WHERE position > $1 ORDER BY position LIMIT $2`},
		{&st.exists, db.Read, `SELECT EXISTS (SELECT 1 FROM events WHERE position > $1)`},
	} {
		if *p.dst, err = p.pool.PrepareContext(ctx, p.sql); err != nil {
			return st, errors.Join(wrap(ctx, "prepare statements", err), st.close(), st.closeReads())
		}
	}
	return st, nil
}

// close closes the append's statements.
func (st statements) close() error {
	return closeAll(st.insert, st.lookup, st.version, st.savepoint, st.release, st.rollbackTo)
}

func (st statements) closeReads() error {
	return closeAll(st.readStream, st.readAll, st.exists)
}

func closeAll(stmts ...*sql.Stmt) error {
	var errs []error
	for _, s := range stmts {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// txStatements are the prepared statements bound to one transaction.
type txStatements struct {
	tx *sql.Tx
	// Bound when first used: most groups need no savepoint or retry lookup.
	insert, lookup, version, savepoint, release, rollbackTo *sql.Stmt
}

func (t *txStatements) get(ctx context.Context, dst **sql.Stmt, src *sql.Stmt) *sql.Stmt {
	if *dst == nil {
		// Closed with the transaction; the statement prepared on the
		// connection stays for the next one.
		*dst = t.tx.StmtContext(ctx, src)
	}
	return *dst
}

// New returns a Store on db, creating or migrating the events table first.
// The Store does not own db: Close leaves it open for the caller to close.
func New(db *sqlitedb.DB) (*Store, error) {
	if db == nil || db.Write == nil || db.Read == nil {
		return nil, errors.New("sqlite eventstore: nil database")
	}
	ctx := context.Background()
	if err := migrate(ctx, db); err != nil {
		return nil, err
	}
	st, err := prepare(ctx, db)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, stmts: st, changed: make(chan struct{})}, nil
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

// Close waits for every append already queued to get its outcome, refuses
// later ones (eventstore.ErrUnavailable), releases the append's prepared
// statements and wakes every Wait in progress. Reads still work. It does not close the *sqlitedb.DB given
// to New: the caller opened it, shares it, and closes it.
func (s *Store) Close() error {
	s.qmu.Lock()
	s.closed = true
	s.qmu.Unlock()
	s.drained.Wait()
	err := s.stmts.close()
	s.notify()
	return err
}

// Count returns the number of events in the log.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.Read.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n); err != nil {
		return 0, wrap(ctx, "count events", err)
	}
	return n, nil
}

// pending is one Append call waiting for, or inside, a group.
type pending struct {
	reqs          []eventstore.AppendRequest
	events, bytes int
	state         atomic.Int32
	done          chan outcome // buffered: the committer never blocks on it
}

// States of a pending append. Exactly one of the caller (queued → cancelled)
// and the committer (queued → claimed) moves it out of queued.
const (
	queued int32 = iota
	claimed
	cancelled
)

type outcome struct {
	res eventstore.AppendResult
	err error
}

// Append writes every request in one transaction, all or nothing.
//
// Concurrent appends are committed together: Append queues the call, and one
// committer takes everything queued (up to maxGroupCalls, and no more events
// or bytes than one maximal Append) into one IMMEDIATE transaction with one
// COMMIT, so the group shares one fsync. Calls run in arrival order, so a
// call sees the writes of the calls before it, and a call that fails is
// undone alone (a call of several events runs inside its own SAVEPOINT)
// while the others of its group commit. Nothing waits for a group to fill:
// a lone writer commits at once. If the group's transaction fails as a
// whole, every call in it is retried in a transaction of its own, so one
// call cannot fail another. Wait is woken once per committed group.
//
// When ctx ends while the call is still queued, it is dropped and ctx's error
// returned: nothing is written. Once the call's transaction has begun,
// Append returns its true outcome whatever ctx does, so an error never hides
// a write.
//
// Errors: eventstore.ErrInvalid for an empty request, stream name or type, a
// nil or repeated event id, or an expected version below eventstore.Any;
// eventstore.ErrTooLarge past MaxAppendEvents or MaxAppendBytes;
// eventstore.ErrWrongVersion when any stream is not at its expected version;
// eventstore.ErrUnavailable when the file stays locked by another process
// past the busy timeout, or after Close. When the first event id is already
// in the log the append is a retry: nothing is written and the earlier
// result is returned, or ErrInvalid if the rest of the request does not
// match what was written.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if err := eventstore.CheckAppend(reqs, MaxAppendEvents, MaxAppendBytes); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: append: %w", err)
	}
	p := &pending{reqs: reqs, done: make(chan outcome, 1)}
	for _, r := range reqs {
		p.events += len(r.Events)
		for _, e := range r.Events {
			p.bytes += len(e.Data) + len(e.Metadata)
		}
	}

	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: append: store closed: %w", eventstore.ErrUnavailable)
	}
	s.queue = append(s.queue, p)
	if !s.running {
		s.running = true
		s.drained.Add(1)
		go s.commitLoop()
	}
	s.qmu.Unlock()

	select {
	case o := <-p.done:
		return o.res, o.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(queued, cancelled) {
			return eventstore.AppendResult{}, fmt.Errorf("sqlite eventstore: append: %w", ctx.Err())
		}
		// Its transaction has begun: wait for what really happened.
		o := <-p.done
		return o.res, o.err
	}
}

// commitLoop commits groups until the queue is empty, then ends: no
// goroutine and no write connection is held while nobody appends.
func (s *Store) commitLoop() {
	defer s.drained.Done()
	for {
		s.qmu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.qmu.Unlock()
			return
		}
		s.qmu.Unlock()
		s.commitGroup()
	}
}

// commitGroup begins a transaction and runs a group in it: what queued
// while it waited for the write connection, and what queues while the
// group's statements run, until the queue is empty or the group is full.
func (s *Store) commitGroup() {
	// The group's work must not end with one caller's context.
	ctx := context.Background()
	tx, err := s.db.Write.BeginTx(ctx, nil)
	if err != nil {
		err = wrap(ctx, "begin append", err)
		var g group
		for _, p := range s.claim(&g) {
			p.done <- outcome{err: err}
		}
		return
	}
	g, wrote, err := s.runGroup(ctx, tx, nil)
	switch {
	case err == nil:
		s.deliver(g, wrote)
	case len(g.calls) == 1:
		g.calls[0].done <- outcome{err: err}
	default:
		for _, p := range g.calls {
			s.commitAlone(ctx, p)
		}
	}
}

// commitAlone runs one claimed append in its own transaction, after its
// group's transaction failed as a whole.
func (s *Store) commitAlone(ctx context.Context, p *pending) {
	tx, err := s.db.Write.BeginTx(ctx, nil)
	if err != nil {
		p.done <- outcome{err: wrap(ctx, "begin append", err)}
		return
	}
	g, wrote, err := s.runGroup(ctx, tx, p)
	if err != nil {
		p.done <- outcome{err: err}
		return
	}
	s.deliver(g, wrote)
}

// group is the calls of one transaction and their outcomes.
type group struct {
	calls         []*pending
	out           []outcome
	events, bytes int
}

// claim moves the next calls off the queue into g, within the group's
// limits, dropping the cancelled, and returns them.
func (s *Store) claim(g *group) []*pending {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	start, n := len(g.calls), 0
	for ; n < len(s.queue) && len(g.calls) < maxGroupCalls; n++ {
		p := s.queue[n]
		if len(g.calls) > 0 && (g.events+p.events > MaxAppendEvents || g.bytes+p.bytes > MaxAppendBytes) {
			break
		}
		if !p.state.CompareAndSwap(queued, claimed) {
			continue // its caller has gone
		}
		g.calls = append(g.calls, p)
		g.events += p.events
		g.bytes += p.bytes
	}
	rest := copy(s.queue, s.queue[n:])
	clear(s.queue[rest:])
	s.queue = s.queue[:rest]
	return g.calls[start:]
}

// deliver wakes the readers once for a committed group that wrote, then
// answers every caller: a caller that sees its result can read its events.
func (s *Store) deliver(g group, wrote bool) {
	if wrote {
		s.notify()
	}
	for i, p := range g.calls {
		p.done <- g.out[i]
	}
}

// runGroup runs appends in tx, in order, and commits: only alone when it is
// given, else the calls it claims from the queue until none is left or the
// group is full. It returns the group with every call's outcome and whether
// any call may have written, or an error when nothing was committed because
// the transaction failed as a whole (a driver error, not a call's own
// fault). It always ends tx.
func (s *Store) runGroup(ctx context.Context, tx *sql.Tx, alone *pending) (g group, wrote bool, err error) {
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	st := &txStatements{tx: tx}
	if alone != nil {
		g.calls = []*pending{alone}
	}
	for i := 0; ; i++ {
		if i == len(g.calls) && (alone != nil || len(s.claim(&g)) == 0) {
			break
		}
		p := g.calls[i]
		// A call of one request with one event needs no savepoint: SQLite
		// undoes a failed statement by itself, and the call writes nothing
		// else. Any other call may fail after a write (a check comes after
		// an event, say).
		savepoint := p.events > 1 || len(p.reqs) > 1
		if savepoint {
			if _, err := st.get(ctx, &st.savepoint, s.stmts.savepoint).ExecContext(ctx); err != nil {
				return g, false, wrap(ctx, "append: savepoint", err)
			}
		}
		res, err := s.appendIn(ctx, st, p.reqs)
		if err != nil && !ownFault(err) {
			return g, false, err
		}
		g.out = append(g.out, outcome{res: res, err: err})
		switch {
		case !savepoint:
		case err != nil:
			if _, err := st.get(ctx, &st.rollbackTo, s.stmts.rollbackTo).ExecContext(ctx); err != nil {
				return g, false, wrap(ctx, "append: roll back to savepoint", err)
			}
			fallthrough
		default:
			if _, err := st.get(ctx, &st.release, s.stmts.release).ExecContext(ctx); err != nil {
				return g, false, wrap(ctx, "append: release savepoint", err)
			}
		}
	}
	if len(g.calls) == 0 { // every one of them was cancelled
		return g, false, nil
	}
	if err := tx.Commit(); err != nil {
		return g, false, wrap(ctx, "commit append", err)
	}
	s.commits.Add(1)
	// Wake readers only when something may have been written.
	for _, o := range g.out {
		if o.err == nil {
			return g, true, nil
		}
	}
	return g, false, nil
}

// ownFault reports whether err is an append's own fault, which a savepoint
// undoes without harm to the transaction. Any other error may have ended
// the whole transaction (SQLite rolls back on some I/O errors), so the group
// must not go on in it.
func ownFault(err error) bool {
	return errors.Is(err, eventstore.ErrWrongVersion) || errors.Is(err, eventstore.ErrInvalid)
}

// appendIn writes one Append call's requests in the current transaction.
func (s *Store) appendIn(ctx context.Context, st *txStatements, reqs []eventstore.AppendRequest) (eventstore.AppendResult, error) {
	res, wrote, err := s.write(ctx, st, reqs)
	// A retry always fails before its first insert, or at it: its first
	// event id is in the log. So the retry check, which runs inside the
	// write transaction (a retry racing its own first attempt sees either
	// all of it or none of it), is only needed then, and an append that
	// succeeds pays nothing for it.
	if err != nil && !wrote && ownFault(err) {
		if earlier, found, lerr := earlierResult(ctx, st.get(ctx, &st.lookup, s.stmts.lookup), reqs); lerr != nil || found {
			return earlier, lerr
		}
	}
	return res, err
}

// write checks the expected versions and inserts the events. wrote tells
// whether any event was inserted before an error.
func (s *Store) write(ctx context.Context, st *txStatements, reqs []eventstore.AppendRequest) (_ eventstore.AppendResult, wrote bool, _ error) {
	ins := st.get(ctx, &st.insert, s.stmts.insert)
	recordedAt := time.Now().UTC().Format(recordedAtLayout)
	res := eventstore.AppendResult{Versions: make([]int64, len(reqs))}
	// Several requests may name one stream; each sees the ones before it.
	current := make(map[string]int64, len(reqs))
	var last int64
	for i, r := range reqs {
		v, ok := current[r.Stream]
		if !ok {
			var err error
			if v, err = streamVersion(ctx, st.get(ctx, &st.version, s.stmts.version), r.Stream); err != nil {
				return eventstore.AppendResult{}, wrote, err
			}
		}
		if r.Expected != eventstore.Any && r.Expected != v {
			return eventstore.AppendResult{}, wrote, fmt.Errorf("sqlite eventstore: append to %q: expected version %d, stream is at %d: %w",
				r.Stream, r.Expected, v, eventstore.ErrWrongVersion)
		}
		for _, e := range r.Events {
			v++
			out, err := ins.ExecContext(ctx, e.ID.String(), r.Stream, v, e.Type,
				string(e.Data), string(e.Metadata), recordedAt)
			if err != nil {
				return eventstore.AppendResult{}, wrote, insertError(ctx, r.Stream, e.ID, err)
			}
			wrote = true
			if last, err = out.LastInsertId(); err != nil {
				return eventstore.AppendResult{}, wrote, wrap(ctx, "append: read position", err)
			}
		}
		current[r.Stream] = v
		res.Versions[i] = v
	}
	res.Position = eventstore.At(uint64(last))
	return res, wrote, nil
}

// earlierResult finds an append already written with the same event ids.
// found is false when the first event id is not in the log. The log keeps no
// record of where one append ended, so a request counts as a retry when every
// one of its events is in the log, in its stream, at consecutive versions;
// anything else that reuses the first id is ErrInvalid.
func earlierResult(ctx context.Context, q *sql.Stmt, reqs []eventstore.AppendRequest) (res eventstore.AppendResult, found bool, err error) {
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

	first := eventstore.FirstEvent(reqs)
	if ok, err := lookup(first); err != nil || !ok {
		return res, false, err
	}
	mismatch := func(id uuid.UUID) error {
		return fmt.Errorf("sqlite eventstore: event %s is in the log but this append is not a retry of the one that wrote it (event %s differs): %w",
			first, id, eventstore.ErrInvalid)
	}
	res.Versions = make([]int64, len(reqs))
	for i, r := range reqs {
		prev := r.Expected // a check's stream was where it expected
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
func streamVersion(ctx context.Context, q *sql.Stmt, stream string) (int64, error) {
	var v sql.NullInt64
	err := q.QueryRowContext(ctx, stream).Scan(&v)
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

// selectStreamEvents is selectEvents without the stream, which a stream's
// reader knows: every event shares the caller's string, read and allocated
// by nobody.
const selectStreamEvents = `SELECT position, event_id, version, type, data, metadata, recorded_at FROM events`

// ReadStream returns the stream's events with version >= from, oldest first;
// a negative from reads from the start. A stream that does not exist has no
// events. An empty name is eventstore.ErrInvalid; every read error is
// returned, wrapping eventstore.ErrUnavailable when the file is locked.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	if stream == "" {
		return nil, fmt.Errorf("sqlite eventstore: read stream: empty stream name: %w", eventstore.ErrInvalid)
	}
	rows, err := s.stmts.readStream.QueryContext(ctx, stream, max(from, 0))
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read stream %q", stream), err)
	}
	evs, err := scanEvents(rows, stream, 0)
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
	rows, err := s.stmts.readAll.QueryContext(ctx, int64(after.Commit), limit)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	evs, err := scanEvents(rows, "", limit)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	return evs, nil
}

// scanEvents reads rows of selectEvents, or of selectStreamEvents when
// stream is not empty, at most limit (0: not known). A replay reads the
// whole log through here, so it allocates little beyond what the driver
// does: data and metadata are the strings the driver makes of each TEXT
// value (a copy of its own), kept as they are (text).
func scanEvents(rows *sql.Rows, stream string, limit int) (_ []eventstore.RecordedEvent, err error) {
	defer func() { err = errors.Join(err, rows.Close()) }()
	var (
		evs = arena.Events{Limit: limit}
		// Scanned into row after row: declared once, as Scan's pointers
		// would move each row's to the heap. The RawBytes are valid until
		// the next row.
		e              eventstore.RecordedEvent
		pos            int64
		id, recordedAt sql.RawBytes
		data, metadata text
		dst            = []any{&pos, &id, &e.Stream, &e.Version, &e.Type, &data, &metadata, &recordedAt}
	)
	if stream != "" {
		e.Stream = stream
		dst = slices.Delete(dst, 2, 3)
	}
	defer evs.Release() // after Done, nothing
	for rows.Next() {
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		if e.ID, err = uuid.ParseBytes(id); err != nil {
			return nil, fmt.Errorf("event at position %d: bad id: %w", pos, err)
		}
		// time.Parse keeps its input only in its error, which is made
		// from a copy.
		if e.RecordedAt, err = time.Parse(recordedAtLayout, unsafe.String(unsafe.SliceData(recordedAt), len(recordedAt))); err != nil {
			_, err = time.Parse(recordedAtLayout, string(recordedAt))
			return nil, fmt.Errorf("event at position %d: bad recorded_at: %w", pos, err)
		}
		e.Position = eventstore.At(uint64(pos))
		e.Data, e.Metadata = data.bytes(), metadata.bytes()
		evs.Add(&e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return evs.Done(), nil
}

// text scans a TEXT value as the driver hands it over: a string, which
// (unlike a []byte) is the reader's to keep, so it is kept without a copy.
type text struct{ s string }

func (t *text) Scan(src any) error {
	switch v := src.(type) {
	case string:
		t.s = v
	case []byte: // the driver's memory, valid until the next row
		t.s = string(v)
	case nil:
		t.s = ""
	default:
		return fmt.Errorf("text column holds %T", src)
	}
	return nil
}

// bytes returns the value as a byte slice that shares the string's memory
// (nil when empty). Nothing writes to the bytes of a read event (as with
// the arena's copies), and its capacity ends where it ends, so an append
// to it reallocates.
func (t *text) bytes() []byte {
	if t.s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(t.s), len(t.s))
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
	err := s.stmts.exists.QueryRowContext(ctx, int64(min(after.Commit, math.MaxInt64))).Scan(&exists)
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
