package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"evident/eventstore"
	"evident/eventstore/internal/arena"
)

// Limits of one Append, the same as the SQLite adapter's so that an append
// accepted by one store is accepted by the other. A larger append fails with
// eventstore.ErrTooLarge before anything is sent.
const (
	// MaxAppendEvents is the most events one Append may write, over all requests.
	MaxAppendEvents = 5000
	// MaxAppendBytes is the most data plus metadata bytes one Append may write.
	MaxAppendBytes = 8 << 20
)

const (
	// versionTable is goose's bookkeeping table for this package's
	// migrations, separate from the read models' in the same schema.
	versionTable = "goose_eventstore"

	// fallbackWake bounds how long Wait sleeps without a notification. A
	// transaction that was holding the read horizon back (see Store) may end
	// without notifying, and a notification is lost while the listener
	// reconnects.
	fallbackWake = time.Second

	// holdBackWait bounds how long ReadAll waits for the read horizon to pass
	// events that are committed but not yet safe to hand out, before it
	// returns without them.
	holdBackWait = time.Second

	// holdBackPause is the longest pause between two looks at the horizon
	// while ReadAll waits for it.
	holdBackPause = 5 * time.Millisecond
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is the event log in PostgreSQL.
//
// # Order without skips
//
// An identity or sequence value is taken when a row is inserted but becomes
// visible when its transaction commits, and transactions commit in any order.
// A reader asking for "seq > N" can therefore see 11 before 10 commits, move
// its checkpoint to 11, and never see 10 — a lost event, which projections
// must never have (DESIGN §4).
//
// Each row therefore also stores the id of the transaction that wrote it (tx,
// xid8, assigned by a column default), and the log order is (tx, seq): all of
// one append's events are contiguous, in the order appended. ReadAll returns
// only rows whose tx is below a horizon: the lowest id among the appends
// still running, or, when none is, the next id to be assigned (the
// snapshot's xmax). An append is recognised by the ROW EXCLUSIVE lock it
// holds on the events table, which it takes before it has an id and keeps
// until it ends (see the horizon statement). Every append below the horizon has finished:
// committed (and visible to the read, which takes its snapshot after the
// horizon's) or aborted (and never visible). Every append that commits later
// has an id at or above the horizon, so it sorts after everything already
// read. A reader that saw position P can never later find an event before P.
// Position is {Commit: tx, Prepare: seq}.
//
// This rests on one rule of this package: the only statements that write
// the log are the two append statements (appendSet and evident_append, see
// group.go), each alone in its transaction, and each holds the events
// table's lock before it has an id (appendSet takes it when it starts, as
// any INSERT does; evident_append first thing, for the whole transaction,
// so that a call's subtransaction that fails does not take it away). A
// transaction that had an id from earlier writes and only then appended
// would be invisible to the horizon until it touched the events table.
//
// Appends are one statement, so readers normally trail the head by a
// millisecond or two. Other transactions on the server, however long, hold
// nothing back. ReadAll hides the wait from callers that have just
// appended: when everything after their position is committed but an
// earlier append is still running, it waits (up to holdBackWait) for it
// rather than return nothing.
//
// # Expected versions
//
// The log itself is the check: the unique index on (stream, version) lets
// one writer of each version win, and an event at version k > 0 is written
// only where k-1 is committed, so a stream's versions are always 0..n and an
// append expecting v that writes v+1 found the stream at v (see appendSet in
// set.go and migrations/00004). A refused row is eventstore.ErrWrongVersion.
// Every append first takes a transaction-level advisory lock per stream, in
// key order, so that writers of one stream queue there, in one order, and
// no two appends deadlock on each other's index entries (up to
// maxLockedStreams streams per statement, see set.go).
//
// # One statement per group of appends
//
// The checks and inserts run server-side, in one statement, so an append is
// one round trip; concurrent appends are written by the same statement, in
// one transaction (group commit, see group.go): set-based when the group
// names each stream once, else by the evident_append function
// (migrations/00004), each append in its own subtransaction. All events of
// a group share one tx, in the order the appends were taken.
//
// # Waking readers
//
// After each commit a notifier sends pg_notify on a channel named after the
// schema, on a pooled connection, at most one every notifyEvery; the
// commits made in between share the next. The first Wait starts one
// listener connection, taken out of the pool, that wakes every waiter; it reconnects with backoff when it
// drops, and Wait also wakes every fallbackWake. Waiters in the appending
// process are woken at commit, without the round trip; its listener skips
// the notifications it sent itself (their payload names the Store), which
// would only wake them again for nothing.
type Store struct {
	pool    *pgxpool.Pool
	channel string // the NOTIFY channel of this schema's log
	// sender is the payload of this Store's notifications: its listener
	// skips them, as its commits woke its readers already.
	sender string

	// Test hooks, set before the Store is used. beforeCommit runs inside
	// every append transaction just before COMMIT; naive makes ReadAll
	// read "seq > after" the way a skipping reader would.
	beforeCommit func(ctx context.Context)
	naive        bool
	// maxHoldPause is the longest pause between awaitHorizon's looks at the
	// horizon (holdBackPause; tests lengthen it).
	maxHoldPause time.Duration

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every wake-up
	listening bool
	closed    bool
	stop      context.CancelFunc // ends the listener
	stopped   chan struct{}      // closed when the listener has ended
	heard     bool               // the listener is connected: every commit wakes
	quiet     quiet              // see readBelow
	others    []int64            // running transactions that are no appends (see horizon)

	// Group commit (group.go).
	qmu          sync.Mutex
	queue        []*call
	committers   int  // running, at most maxCommitters
	appendClosed bool // Close has begun: no new appends
	notifying    bool // the notifier runs
	commitWG     sync.WaitGroup
	groupCtx     context.Context // statements of groups; cancelled by Close
	groupCancel  context.CancelFunc
	notify       chan struct{} // capacity 1: a notification is due
	notifierDone chan struct{}
	groups       atomic.Int64 // statements sent, for tests
	grouped      atomic.Int64 // appends they carried
	fallbacks    atomic.Int64 // groups whose statement failed as a whole
	setGroups    atomic.Int64 // groups appendSet wrote
	declined     atomic.Int64 // groups appendSet declined, sent again through evident_append
	wakes        atomic.Int64 // wake-ups of the readers, for tests
	notifies     atomic.Int64 // NOTIFYs sent, for tests
}

var _ eventstore.Store = (*Store)(nil)

// New returns a Store on pool, creating or migrating its tables in the
// connection's current schema first. It starts no goroutine: appends start
// their committers and the notifier, Wait the listener. The Store does
// not own pool: Close leaves it open for the caller to close. The listener
// (see Wait) takes one connection out of the pool for good; the pool opens
// another in its place.
//
// Errors wrap eventstore.ErrUnavailable when the server cannot be reached.
func New(ctx context.Context, pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("postgres eventstore: nil pool")
	}
	var schema string
	if err := pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, wrap(ctx, "read current schema", err)
	}
	if schema == "" {
		return nil, errors.New("postgres eventstore: no current schema: the search_path names no existing schema")
	}
	if err := migrate(ctx, pool, schema); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithCancel(context.Background())
	return &Store{
		pool: pool, channel: channelName(schema), sender: rand.Text(), changed: make(chan struct{}), maxHoldPause: holdBackPause, others: []int64{},
		groupCtx: gctx, groupCancel: cancel,
		notify: make(chan struct{}, 1), notifierDone: make(chan struct{}),
	}, nil
}

// channelName is the NOTIFY channel for the log in schema: one per schema,
// so that stores in different schemas of one database do not wake each
// other, and at most 63 bytes, the longest name PostgreSQL keeps.
func channelName(schema string) string {
	const prefix = "evident_events:"
	if len(prefix)+len(schema) <= 63 {
		return prefix + schema
	}
	sum := sha256.Sum256([]byte(schema))
	return prefix + hex.EncodeToString(sum[:16])
}

// migrate runs this package's migrations under an advisory lock scoped to the
// schema, so that several processes starting at once migrate one at a time.
// goose runs the lock and the migrations on one connection.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("postgres eventstore: load migrations: %w", err)
	}
	// Closing this *sql.DB closes only the connections it took from pool,
	// never pool itself.
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(versionTable),
		goose.WithSessionLocker(schemaLock("evident eventstore migrations "+schema)),
		// Only this package's SQL files: never Go migrations another package
		// registered globally.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("postgres eventstore: load migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return wrap(ctx, "migrate", err)
	}
	return nil
}

// schemaLock is a session advisory lock named by a string. Unlike goose's
// own Postgres locker, which polls every five seconds under one lock for the
// whole database, it blocks until the lock is free (or ctx ends), and stores
// in different schemas do not wait for each other.
type schemaLock string

func (l schemaLock) SessionLock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(hashtextextended($1, 0))`, string(l))
	return err
}

func (l schemaLock) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	_, err := conn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, string(l))
	return err
}

// Close refuses new appends, lets the ones already queued finish, stops
// the notifier and the listener, and wakes every Wait in progress. It does
// not close the pool given to New: the caller opened it, shares it, and
// closes it.
func (s *Store) Close() error {
	s.qmu.Lock()
	s.appendClosed = true
	notifying := s.notifying
	s.qmu.Unlock()
	s.commitWG.Wait()
	s.groupCancel()
	if notifying {
		<-s.notifierDone
	}

	s.mu.Lock()
	s.closed = true
	stop, stopped := s.stop, s.stopped
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
	s.wake()
	return nil
}

// Count returns the number of events in the log.
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
		return 0, wrap(ctx, "count events", err)
	}
	return n, nil
}

// Append writes every request in one transaction, all or nothing, and
// returns the position of the last event written.
//
// Errors: eventstore.ErrInvalid for an empty request, stream name or type, a
// nil or repeated event id, or an expected version below eventstore.Any;
// eventstore.ErrTooLarge past MaxAppendEvents or MaxAppendBytes;
// eventstore.ErrWrongVersion when any stream is not at its expected version
// (or, rarely, when the server aborted the transaction as a deadlock or
// serialization failure: re-reading and retrying is the right answer to
// both); eventstore.ErrUnavailable when the server cannot be reached. An
// ErrUnavailable from the commit leaves the outcome unknown; retrying the
// same append is safe.
//
// When the first event id is already in the log the append is a retry:
// nothing is written and the earlier result is returned, or ErrInvalid if the
// rest of the request does not match what was written. The retry is
// recognised after the conflict it causes, so it costs nothing on the normal
// path, and a retry racing its own first attempt waits on that attempt's row
// locks and then sees it committed.
//
// When ctx ends before the append was sent, nothing is written; after, the
// error says the outcome is unknown.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if err := eventstore.CheckAppend(reqs, MaxAppendEvents, MaxAppendBytes); err != nil {
		return eventstore.AppendResult{}, fmt.Errorf("postgres eventstore: %w", err)
	}
	r := s.submit(ctx, reqs)
	if r.err == nil {
		return r.res, nil
	}
	err := r.err
	if r.fresh || !errors.Is(err, eventstore.ErrWrongVersion) && !errors.Is(err, errIDTaken) {
		return eventstore.AppendResult{}, err
	}
	earlier, found, lerr := s.earlierResult(ctx, reqs)
	switch {
	case lerr != nil:
		return eventstore.AppendResult{}, lerr
	case found:
		return earlier, nil
	case errors.Is(err, errIDTaken):
		return eventstore.AppendResult{}, fmt.Errorf("%w: %w", err, eventstore.ErrInvalid)
	}
	return eventstore.AppendResult{}, err
}

// errIDTaken marks an append whose event id is already in the log; Append
// decides whether that is a retry or ErrInvalid.
var errIDTaken = errors.New("event id is already in the log")

// streamPlan is what one append does to one stream's row.
type streamPlan struct {
	stream   string
	expected int64 // of the first request naming the stream
	events   int64 // over every request naming it
}

// planStreams groups the requests by stream, sorted by name: the order of
// evident_append's guards and of the starts it returns.
func planStreams(reqs []eventstore.AppendRequest) []streamPlan {
	byName := make(map[string]int, len(reqs))
	var plans []streamPlan
	for _, r := range reqs {
		i, ok := byName[r.Stream]
		if !ok {
			i = len(plans)
			byName[r.Stream] = i
			plans = append(plans, streamPlan{stream: r.Stream, expected: r.Expected})
		}
		plans[i].events += int64(len(r.Events))
	}
	slices.SortFunc(plans, func(a, b streamPlan) int {
		switch {
		case a.stream < b.stream:
			return -1
		case a.stream > b.stream:
			return 1
		}
		return 0
	})
	return plans
}

func bytesOf(b []byte) []byte {
	if b == nil {
		return []byte{} // NOT NULL; read back as nil, as from SQLite
	}
	return b
}

// earlierResult finds an append already written with the same event ids.
// found is false when the first event id is not in the log. The log keeps no
// record of where one append ended, so a request counts as a retry when every
// one of its events is in the log, in its stream, at consecutive versions;
// anything else that reuses the first id is ErrInvalid.
func (s *Store) earlierResult(ctx context.Context, reqs []eventstore.AppendRequest) (res eventstore.AppendResult, found bool, err error) {
	var all []uuid.UUID
	for _, r := range reqs {
		for _, e := range r.Events {
			all = append(all, e.ID)
		}
	}
	rows, err := s.pool.Query(ctx,
		`SELECT event_id, stream, version, tx::text::bigint, seq FROM events WHERE event_id = ANY($1)`, all)
	if err != nil {
		return res, false, wrap(ctx, "retry check", err)
	}
	type at struct {
		stream  string
		version int64
		pos     eventstore.Position
	}
	found2 := make(map[uuid.UUID]at, len(all))
	for rows.Next() {
		var (
			id      uuid.UUID
			a       at
			txid, q int64
		)
		if err := rows.Scan(&id, &a.stream, &a.version, &txid, &q); err != nil {
			rows.Close()
			return res, false, wrap(ctx, "retry check", err)
		}
		a.pos = eventstore.Position{Commit: uint64(txid), Prepare: uint64(q)}
		found2[id] = a
	}
	if err := rows.Err(); err != nil {
		return res, false, wrap(ctx, "retry check", err)
	}

	first := eventstore.FirstEvent(reqs)
	if _, ok := found2[first]; !ok {
		return res, false, nil
	}
	res.Versions = make([]int64, len(reqs))
	for i, r := range reqs {
		prev := r.Expected // a check's stream was where it expected
		for j, e := range r.Events {
			a, ok := found2[e.ID]
			if !ok || a.stream != r.Stream || (j > 0 && a.version != prev+1) {
				return eventstore.AppendResult{}, false, fmt.Errorf(
					"postgres eventstore: event %s is in the log but this append is not a retry of the one that wrote it (event %s differs): %w",
					first, e.ID, eventstore.ErrInvalid)
			}
			prev = a.version
			if res.Position.Less(a.pos) {
				res.Position = a.pos
			}
		}
		res.Versions[i] = prev
	}
	return res, true, nil
}

const selectEvents = `SELECT tx::text::bigint, seq, event_id, stream, version, type, data, metadata, recorded_at FROM events`

// ReadStream returns the stream's events with version >= from, oldest first;
// a negative from reads from the start. A stream that does not exist has no
// events. An empty name is eventstore.ErrInvalid; every read error is
// returned, wrapping eventstore.ErrUnavailable when the server cannot be
// reached.
//
// A stream's version k is written only once k-1 is committed (see Store),
// so a stream's versions commit in order and a stream read needs no horizon.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	if stream == "" {
		return nil, fmt.Errorf("postgres eventstore: read stream: empty stream name: %w", eventstore.ErrInvalid)
	}
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE stream = $1 AND version >= $2 ORDER BY version`, stream, max(from, 0))
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read stream %q", stream), err)
	}
	evs, err := scanEvents(rows, 0)
	if err != nil {
		return nil, wrap(ctx, fmt.Sprintf("read stream %q", stream), err)
	}
	return evs, nil
}

// horizon is the statement that says how far ReadAll may read: the lowest
// transaction id that may still add events to the log (see Store). It is
// the lowest id among the transactions that were running at the
// statement's snapshot and are appenders (hold the ROW EXCLUSIVE lock every
// append takes on the events table, with an id), or the snapshot's xmax
// when none is. Readers hold a weaker lock on it, ACCESS SHARE.
//
// It must run in a statement before the one that reads the events: an
// appender that ends between this snapshot and the lock table read is left
// out, and only a later snapshot is sure to see its events. An appender's
// id is read from pg_stat_activity (backend_xid, the very field snapshots
// read), not from its transaction-id lock, which a backend takes a moment
// after its id is already in snapshots: in that moment the appender would
// be missed and its events skipped. Ids there are 32-bit; an in-progress
// xid8 is matched by its low 32 bits, which are unique among the running
// transactions.
//
// It also returns the others: the transactions running at its snapshot
// that are no appends (or have ended). An append holds the lock before it
// has an id, so a transaction seen with an id and without the lock never
// appends: readAfterSnap may leave them out of its horizon for good.
const horizon = `WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap),
appenders AS (
	SELECT a.backend_xid::text::bigint AS xid
	FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	WHERE l.locktype = 'relation' AND l.relation = 'events'::regclass AND l.mode = 'RowExclusiveLock'
	  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
	  AND a.backend_xid IS NOT NULL
),
xip AS (SELECT x::text::bigint AS x FROM s, pg_snapshot_xip(s.snap) AS x)
SELECT LEAST(
	pg_snapshot_xmax(s.snap)::text::bigint,
	(SELECT min(x) FROM xip WHERE x % 4294967296 IN (SELECT xid FROM appenders))),
	ARRAY(SELECT x FROM xip WHERE x % 4294967296 NOT IN (SELECT xid FROM appenders))
FROM s`

const readAfter = selectEvents + ` WHERE (tx, seq) > ($1::bigint::text::xid8, $2) ORDER BY tx, seq LIMIT $3`

// readAfterSnap is readAfter with, on every row, a horizon that needs no
// look at the lock table: the lowest transaction id running at the read's
// own snapshot, or its xmax when none is, leaving out the transactions the
// horizon statement last found to be no appends ($4, see horizon). Every
// other transaction below it had ended when the snapshot was taken, so the
// rows below it are every event it will ever have there; it is the exact
// horizon when no transaction but appends and those is running, and below
// it otherwise. pg_current_snapshot() is the
// statement's snapshot, so one statement reads both.
const readAfterSnap = `WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap)
SELECT tx::text::bigint, seq, event_id, stream, version, type, data, metadata, recorded_at,
	(SELECT LEAST(pg_snapshot_xmax(snap)::text::bigint,
		(SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap) AS x
		 WHERE x::text::bigint <> ALL (coalesce($4::bigint[], '{}')))) FROM s)
FROM events WHERE (tx, seq) > ($1::bigint::text::xid8, $2) ORDER BY tx, seq LIMIT $3`

// ReadAll returns up to limit events with a position strictly after after, in
// log order, never one that a later call could precede with a lower position
// (see Store). When every event after after is committed but an append
// that may still write before it is running, it waits up to holdBackWait
// for that append to end, so that a caller reads its own appends; it may
// then return fewer than limit events, or none, and callers read again. A
// limit below one is eventstore.ErrInvalid.
//
// A read that found every event there was after some position, with
// nothing held back, is remembered (see quiet): until a commit wakes the
// readers, a read after that position finds nothing without asking the
// server.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if limit < 1 {
		return nil, fmt.Errorf("postgres eventstore: read all: limit %d: %w", limit, eventstore.ErrInvalid)
	}
	if s.naive {
		return s.readAllNaive(ctx, after, limit)
	}
	if after.Commit > math.MaxInt64 {
		return nil, nil
	}
	if s.isQuiet(after) {
		return nil, nil
	}
	evs, held, err := s.readBelow(ctx, after, limit, false)
	if err != nil || len(evs) > 0 || held == 0 {
		return evs, err
	}
	if err := s.awaitHorizon(ctx, held); err != nil {
		return nil, err
	}
	// Straight to the exact horizon: the snapshot's would most likely
	// still find running what held the read back, costing a round trip.
	evs, _, err = s.readBelow(ctx, after, limit, true)
	return evs, err
}

// readBelow reads up to limit events after after and keeps those below the
// horizon; held is the transaction id of the first one held back, or zero.
//
// It first reads with the snapshot's own horizon (readAfterSnap): one
// statement, and no look at the lock table. Only when that holds back any
// event, because a transaction below it was running (an append, or
// anything else with an id not known to be no append), does it ask which
// running transactions are appends (horizon) and read again below that,
// the two statements in one round trip: so it returns what the exact
// horizon allows, and a read that returns fewer than limit events still
// means that no append of the log held any back; exact goes there at once. When the read found every
// event after after, it remembers so (quiet).
func (s *Store) readBelow(ctx context.Context, after eventstore.Position, limit int, exact bool) (_ []eventstore.RecordedEvent, held uint64, err error) {
	// Taken before the read: a commit after the read's snapshot closes it.
	changed, heard := s.subscribeHeard()
	if !exact {
		evs, h, err := s.readSnap(ctx, after, limit)
		if err != nil {
			return nil, 0, err
		}
		below := true
		for _, e := range evs {
			if int64(e.Position.Commit) >= h {
				below = false
				break
			}
		}
		if below {
			if len(evs) < limit && heard {
				s.setQuiet(after, evs, changed)
			}
			return evs, 0, nil
		}
	}
	evs, held, err := s.readExact(ctx, after, limit)
	if err == nil && held == 0 && len(evs) < limit && heard {
		s.setQuiet(after, evs, changed)
	}
	return evs, held, err
}

// readSnap reads up to limit events after after with readAfterSnap, and
// returns them with the snapshot's horizon (when it found any).
func (s *Store) readSnap(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, int64, error) {
	s.mu.Lock()
	others := s.others
	s.mu.Unlock()
	rows, err := s.pool.Query(ctx, readAfterSnap, int64(min(after.Commit, math.MaxInt64)), int64(min(after.Prepare, math.MaxInt64)), limit, others)
	if err != nil {
		return nil, 0, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	var h int64
	evs, err := scanEvents(rows, limit, &h)
	if err != nil {
		return nil, 0, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	return evs, h, nil
}

// readExact reads up to limit events after after below the horizon of the
// running appends: the horizon statement and the read, in one round trip.
func (s *Store) readExact(ctx context.Context, after eventstore.Position, limit int) (_ []eventstore.RecordedEvent, held uint64, err error) {
	b := &pgx.Batch{}
	b.Queue(horizon)
	b.Queue(readAfter, int64(min(after.Commit, math.MaxInt64)), int64(min(after.Prepare, math.MaxInt64)), limit)
	br := s.pool.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); cerr != nil && err == nil {
			err = wrap(ctx, fmt.Sprintf("read all after %s", after), cerr)
		}
	}()
	var (
		h      int64
		others []int64
	)
	if err := br.QueryRow().Scan(&h, &others); err != nil {
		return nil, 0, wrap(ctx, "read horizon", err)
	}
	s.setOthers(others)
	rows, err := br.Query()
	if err != nil {
		return nil, 0, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	evs, err := scanEvents(rows, limit)
	if err != nil {
		return nil, 0, wrap(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	for i, e := range evs {
		if int64(e.Position.Commit) >= h {
			return evs[:i], e.Position.Commit, nil
		}
	}
	return evs, 0, nil
}

// setOthers keeps the transactions the horizon statement found to be no
// appends, for readAfterSnap.
func (s *Store) setOthers(others []int64) {
	if others == nil {
		others = []int64{}
	}
	s.mu.Lock()
	s.others = others
	s.mu.Unlock()
}

// quiet is what the latest read that found every event after its position
// left behind: the position after which there was nothing more, and the
// wake-up channel taken before that read. While that channel is open no
// append has committed since (this process's wake their readers at commit;
// other processes' through the listener, which was connected when it was
// taken and closes it when it drops), so nothing after at is readable: a
// read or a Wait's look finds nothing without asking the server. It lasts
// at most fallbackWake, as a notification can be lost.
type quiet struct {
	at      eventstore.Position
	changed <-chan struct{}
	until   time.Time
}

// setQuiet remembers that a read after after, whose channel was changed,
// found evs and nothing after them.
func (s *Store) setQuiet(after eventstore.Position, evs []eventstore.RecordedEvent, changed <-chan struct{}) {
	at := after
	if len(evs) > 0 {
		at = evs[len(evs)-1].Position
	}
	s.mu.Lock()
	if s.changed == changed {
		s.quiet = quiet{at: at, changed: changed, until: time.Now().Add(fallbackWake)}
	}
	s.mu.Unlock()
}

// isQuiet reports whether nothing is readable after after, as the latest
// read found and no commit has since denied.
func (s *Store) isQuiet(after eventstore.Position) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.quiet
	return q.changed != nil && q.changed == s.changed && q.at == after && s.heard && time.Now().Before(q.until)
}

// awaitHorizon polls, with backoff, until the horizon has passed transaction
// held or holdBackWait has gone by. The transactions that hold the horizon
// are appends: one statement each, a few milliseconds from their commit.
// An append of this process that commits ends the pause at once: it is
// most often the one holding the horizon.
func (s *Store) awaitHorizon(ctx context.Context, held uint64) error {
	deadline := time.Now().Add(holdBackWait)
	pause := 500 * time.Microsecond
	for {
		changed := s.subscribe() // before the horizon is read: no commit falls between
		var (
			h      int64
			others []int64
		)
		if err := s.pool.QueryRow(ctx, horizon).Scan(&h, &others); err != nil {
			return wrap(ctx, "read horizon", err)
		}
		s.setOthers(others)
		if uint64(h) > held || time.Now().Add(pause).After(deadline) {
			return nil
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		pause = min(2*pause, s.maxHoldPause)
	}
}

// readAllNaive is the reader Store's design exists to avoid: it takes seq
// alone as the position. Only tests use it, to show that it skips.
func (s *Store) readAllNaive(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	rows, err := s.pool.Query(ctx, selectEvents+` WHERE seq > $1 ORDER BY seq LIMIT $2`, int64(min(after.Commit, math.MaxInt64)), limit)
	if err != nil {
		return nil, wrap(ctx, "naive read all", err)
	}
	evs, err := scanEvents(rows, limit)
	if err != nil {
		return nil, wrap(ctx, "naive read all", err)
	}
	for i := range evs {
		evs[i].Position = eventstore.At(evs[i].Position.Prepare)
	}
	return evs, nil
}

// scanEvents reads rows of selectEvents, at most limit (0: not known). The text and bytes of the events
// are copied out of the driver's buffers into a few shared blocks (arena),
// not one allocation per value: a replay reads the whole log through here.
//
// extra are scanned from the columns after selectEvents' (readAfterSnap's
// horizon), from every row.
func scanEvents(rows pgx.Rows, limit int, extra ...any) ([]eventstore.RecordedEvent, error) {
	defer rows.Close()
	var (
		evs   = arena.Events{Limit: limit}
		bytes arena.Arena
		types arena.Interner
		// Scanned into row after row: declared once, as Scan's pointers
		// would move each row's to the heap.
		e                           eventstore.RecordedEvent
		txid, seq                   int64
		id                          [16]byte           // as uuid.UUID, pgx would scan it through a string
		stream, typ, data, metadata pgtype.DriverBytes // valid until the next row
		recordedAt                  time.Time
		dst                         = append([]any{&txid, &seq, &id, &stream, &e.Version, &typ, &data, &metadata, &recordedAt}, extra...)
	)
	for rows.Next() {
		if err := rows.Scan(dst...); err != nil {
			evs.Release()
			return nil, err
		}
		e.ID = id
		e.Position = eventstore.Position{Commit: uint64(txid), Prepare: uint64(seq)}
		e.RecordedAt = recordedAt.UTC()
		e.Stream, e.Type = bytes.String(stream), types.String(typ)
		e.Data, e.Metadata = bytes.Bytes(data), bytes.Bytes(metadata)
		evs.Add(&e)
	}
	if err := rows.Err(); err != nil {
		evs.Release()
		return nil, err
	}
	return evs.Done(), nil
}

// Wait returns nil as soon as an event after after is readable, when an
// append commits anywhere on this schema's log, or after fallbackWake;
// callers re-read. It returns ctx's error when ctx ends first. The first Wait
// starts the listener (see Store); Close stops it.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Take the channel before looking, so a commit between the look and the
	// select still wakes us.
	changed := s.subscribe()

	// The first event after after decides: events above the horizon come
	// after every event below it. A quiet position needs no look: the
	// channel that says it is quiet is the one waited on.
	if !s.isQuiet(after) {
		evs, _, err := s.readBelow(ctx, after, 1, false)
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			return nil
		}
	}

	timer := time.NewTimer(fallbackWake)
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

// subscribe returns the channel the next wake-up closes, starting the
// listener if it is not running.
func (s *Store) subscribe() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listening && !s.closed {
		s.listening = true
		ctx, stop := context.WithCancel(context.Background())
		s.stop, s.stopped = stop, make(chan struct{})
		go s.listen(ctx, s.stopped)
	}
	return s.changed
}

// subscribeHeard returns the channel the next wake-up closes, without
// starting the listener (a Wait does), and reports whether the listener
// is connected: only then does every commit, of any process, close it.
func (s *Store) subscribeHeard() (<-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed, s.heard
}

// wake wakes every Wait in progress.
func (s *Store) wake() {
	s.wakes.Add(1)
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Store) setHeard(heard bool) {
	s.mu.Lock()
	s.heard = heard
	s.mu.Unlock()
}

// listen keeps one connection LISTENing on the log's channel until ctx ends,
// reconnecting with backoff. Its errors have no caller to go to; while it is
// down, Wait falls back to waking every fallbackWake.
func (s *Store) listen(ctx context.Context, stopped chan<- struct{}) {
	defer close(stopped)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		s.listenOnce(ctx, func() { backoff = minBackoff })
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// listenOnce listens on one connection until it fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, connected func()) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return
	}
	// A connection in LISTEN state must never serve anyone else: take it out
	// of the pool for good (the pool opens another when it needs one).
	conn := pc.Hijack()
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return
	}
	connected()
	s.setHeard(true)
	// When it drops, the notifications it would have heard are lost: what
	// the readers believe quiet may not be any more.
	defer func() {
		s.setHeard(false)
		s.wake()
	}()
	// Appends that committed before LISTEN took effect sent no wake-up.
	s.wake()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return
		}
		if n.Payload != s.sender {
			s.wake()
		}
	}
}
