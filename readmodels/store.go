package readmodels

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"evident/eventstore"

	"github.com/pressly/goose/v3"
)

//go:embed migrations
var migrations embed.FS

// VersionTable is the goose version table of the read models; the event
// store keeps its own, so both can share one database.
const VersionTable = "goose_readmodels"

// Dialects Open accepts.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// Store is the read side: queries on the read pool, writes on the write pool.
type Store struct {
	dialect string
	write   *sql.DB
	read    *sql.DB
	// w and r run statements on write and read: on SQLite through caches
	// of prepared statements (wc, rc), on PostgreSQL as they are.
	w, r   execer
	wc, rc *stmtCache
	now    func() time.Time
	// idemLease is how long a pending idempotency claim holds its key.
	idemLease time.Duration
	// syncLevel is the write connection's PRAGMA synchronous plus one
	// (SQLite; zero until UpdateAsync first reads it).
	syncLevel atomic.Int64

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced when a checkpoint may have moved
	listening int           // running Listen sessions that are subscribed

	// The notifier (PostgreSQL): one goroutine that sends a checkpoint
	// NOTIFY after commits, started by the first one and stopped by Close.
	kick      chan struct{} // capacity 1: a NOTIFY is due
	quit      chan struct{} // closed by Close
	notifying bool          // the notifier runs (guarded by mu)
	closed    bool          // Close was called (guarded by mu)
	stopped   chan struct{} // closed when the notifier has returned
}

// Option changes how a Store behaves; none is required.
type Option func(*Store)

// WithClock sets the clock used by query-time rules (a session that is open
// but past its expiry is listed as expired). The default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// WithIdempotencyLease sets how long a pending idempotency claim keeps its
// key from retries (default 15s). Past it, a retry of the same request takes
// the key over: the first attempt is presumed dead (its process crashed).
// Set it above the longest a command request can run.
func WithIdempotencyLease(d time.Duration) Option {
	return func(s *Store) { s.idemLease = d }
}

// Open returns a Store on the given pools. write must be the pool every
// writer of the database shares (on SQLite: one connection); read may be a
// read-only pool on the same database. Open does not migrate; call Migrate.
func Open(ctx context.Context, dialect string, write, read *sql.DB, opts ...Option) (*Store, error) {
	switch dialect {
	case DialectSQLite, DialectPostgres:
	default:
		return nil, fmt.Errorf("readmodels: unknown dialect %q", dialect)
	}
	if write == nil || read == nil {
		return nil, errors.New("readmodels: write and read pools are required")
	}
	s := &Store{dialect: dialect, write: write, read: read, now: time.Now, idemLease: 15 * time.Second, changed: make(chan struct{}),
		kick: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	s.w, s.r = write, read
	if dialect == DialectSQLite {
		s.wc, s.rc = newStmtCache(write), newStmtCache(read)
		s.w, s.r = cachedDB{write, s.wc}, cachedDB{read, s.rc}
	}
	if err := read.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("readmodels: ping: %w", classify(err))
	}
	return s, nil
}

// Migrate brings the schema to the newest version with goose, using the
// migrations embedded for the Store's dialect.
func (s *Store) Migrate(ctx context.Context) error {
	p, err := s.migrations()
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("readmodels: migrate: %w", classify(err))
	}
	return nil
}

// migrations is the goose provider of the Store's dialect.
func (s *Store) migrations() (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations, "migrations/"+s.dialect)
	if err != nil {
		return nil, fmt.Errorf("readmodels: migrations: %w", classify(err))
	}
	d := goose.DialectSQLite3
	if s.dialect == DialectPostgres {
		d = goose.DialectPostgres
	}
	p, err := goose.NewProvider(d, s.write, fsys,
		goose.WithTableName(VersionTable),
		// Other packages may register Go migrations globally; these are not ours.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("readmodels: migrations: %w", classify(err))
	}
	return p, nil
}

// Update runs fn in one transaction on the write pool and commits it when fn
// returns nil. A projection writes its rows and its checkpoint through the
// same Tx, so both take effect or neither does.
//
// An error from fn is returned as it is (after the rollback); an error from
// beginning or committing is wrapped in *TxError so that callers can tell a
// database that is unavailable from a handler that failed.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	ct, err := s.update(ctx, s.write, false, fn)
	ct.flush(ctx)
	return err
}

// UpdateAsync is Update for a transaction whose commit need not wait for
// the disk: only for rows derived from the log whose checkpoint moves in the
// same transaction (AdvanceCheckpoint), never for anything the log does not
// hold (credentials, idempotency keys). A crash of the machine (on
// PostgreSQL, of the server) can then lose the last few such commits, rows
// and checkpoint together, never one without the other, and they are applied
// again from the log.
//
// On PostgreSQL the transaction runs with synchronous_commit = off, set by
// its checkpoint statement, and is sent as one batch (see updateBatched):
// fn must touch the database only through Tx's methods, and a write's
// failure is reported by UpdateAsync, wrapped in ErrBatched. On SQLite it runs with synchronous = NORMAL: in
// WAL mode its COMMIT writes the log but does not fsync it; the next
// commit that does (every append is FULL) makes it durable with its own.
// The write connection is back at its own level for everything after.
func (s *Store) UpdateAsync(ctx context.Context, fn func(*Tx) error) error {
	if s.dialect != DialectSQLite {
		return s.updateBatched(ctx, fn)
	}
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return &TxError{Op: "begin", Err: err}
	}
	level := s.syncLevel.Load()
	if level == 0 {
		if err := conn.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&level); err != nil {
			return errors.Join(&TxError{Op: "begin", Err: err}, conn.Close())
		}
		level++ // stored off by one: zero is "not read yet"
		s.syncLevel.Store(level)
	}
	var ct *cachedTx
	if level-1 <= syncNormal { // it never waits for the disk anyway
		ct, err = s.update(ctx, conn, true, fn)
		err = closeConn(err, conn)
	} else {
		// The level cannot change inside a transaction: it is set around it.
		if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
			return errors.Join(&TxError{Op: "begin", Err: err}, conn.Close())
		}
		ct, err = s.update(ctx, conn, true, fn)
		if _, rerr := conn.ExecContext(context.WithoutCancel(ctx), fmt.Sprintf(`PRAGMA synchronous = %d`, level-1)); rerr != nil {
			// Never hand the connection back below its level: drop it, and
			// the pool opens a new one with the configured pragmas.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			return errors.Join(err, &TxError{Op: "restore synchronous", Err: rerr})
		}
		err = closeConn(err, conn)
	}
	ct.flush(ctx) // on the pool: the connection is back in it
	return err
}

// closeConn hands conn back to its pool; err, the transaction's, stays as
// it is unless that fails.
func closeConn(err error, conn *sql.Conn) error {
	if cerr := conn.Close(); cerr != nil {
		return errors.Join(err, &TxError{Op: "release", Err: cerr})
	}
	return err
}

// syncNormal is SQLite's synchronous = NORMAL.
const syncNormal = 1

// update runs fn in a transaction begun on db (a pool or one of its
// connections); async is UpdateAsync's. On SQLite it returns the
// transaction's statements, for the caller to flush once it holds the
// connection no more.
func (s *Store) update(ctx context.Context, db interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}, async bool, fn func(*Tx) error) (*cachedTx, error) {
	sqlTx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, &TxError{Op: "begin", Err: err}
	}
	tx := &Tx{ctx: ctx, tx: sqlTx, q: sqlTx, now: s.now, dialect: s.dialect, async: async && s.dialect == DialectPostgres}
	var ct *cachedTx
	if s.wc != nil {
		ct = &cachedTx{tx: sqlTx, cache: s.wc}
		tx.q = ct
	}
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback() // the error from fn says more than the rollback's
		return ct, err
	}
	if err := sqlTx.Commit(); err != nil {
		return ct, &TxError{Op: "commit", Err: err}
	}
	if tx.checkpointed {
		s.broadcast()
		s.notifyOthers()
	}
	return ct, nil
}

// AdvanceCheckpoint moves a projection's checkpoint from from to to, in one
// statement of its own: for a batch that changes none of the projection's
// rows, where a transaction would only add round trips. Like
// Tx.AdvanceCheckpoint it fails with ErrCheckpointMoved when the checkpoint
// is not at from, and wakes the waiters when it moved. On PostgreSQL it does
// not wait for the WAL flush (see UpdateAsync): a crash can only lose it,
// and the events it passed, which change nothing, are read again.
func (s *Store) AdvanceCheckpoint(ctx context.Context, name string, from, to eventstore.Position) error {
	if err := advanceCheckpoint(ctx, s.w, s.dialect == DialectPostgres, s.now(), name, from, to); err != nil {
		return err
	}
	s.broadcast()
	s.notifyOthers()
	return nil
}

// TxError is a failure to begin or commit a transaction: the database, not
// the caller's work, failed. It is usually worth retrying.
type TxError struct {
	Op  string // begin or commit
	Err error
}

func (e *TxError) Error() string { return "readmodels: " + e.Op + ": " + e.Err.Error() }
func (e *TxError) Unwrap() error { return e.Err }

// Is makes every TxError an ErrUnavailable.
func (e *TxError) Is(target error) bool { return target == ErrUnavailable }

// Checkpoint returns the stored position of a projection or reactor; the
// zero Position when it has none.
func (s *Store) Checkpoint(ctx context.Context, name string) (eventstore.Position, error) {
	return checkpoint(ctx, s.r, name)
}

// Reset clears a projection for a rebuild: its tables, its checkpoint and its
// parked events, in one transaction. tables must be projection tables
// (ProjectionTables); credentials and idempotency keys are never reset.
func (s *Store) Reset(ctx context.Context, projection string, tables ...string) error {
	for _, t := range tables {
		if !isProjectionTable(t) {
			return fmt.Errorf("readmodels: reset %s: %q is not a projection table", projection, t)
		}
	}
	return s.Update(ctx, func(tx *Tx) error {
		for _, t := range tables {
			// t is one of the fixed names checked above.
			if _, err := tx.q.ExecContext(ctx, "DELETE FROM "+t); err != nil {
				return fmt.Errorf("readmodels: reset %s: %w", t, classify(err))
			}
		}
		if _, err := tx.q.ExecContext(ctx, `DELETE FROM checkpoints WHERE name = $1`, projection); err != nil {
			return fmt.Errorf("readmodels: reset checkpoint %s: %w", projection, classify(err))
		}
		if _, err := tx.q.ExecContext(ctx, `DELETE FROM parked_events WHERE projection = $1`, projection); err != nil {
			return fmt.Errorf("readmodels: reset parked %s: %w", projection, classify(err))
		}
		return tx.notify(projection, eventstore.Position{})
	})
}

// ProjectionTables are the tables projections write, in Dump order. Each
// belongs to exactly one projection.
var ProjectionTables = []string{"users", "sessions", "activation_tokens", "audit"}

// primary keys of the projection tables, for a stable Dump order.
var tableOrder = map[string]string{
	"users":             "id",
	"sessions":          "id",
	"activation_tokens": "token_hash",
	"audit":             "pos_commit, pos_prepare",
}

func isProjectionTable(t string) bool {
	_, ok := tableOrder[t]
	return ok
}

// Dump returns every row of every projection table, ordered by primary key,
// as column → value maps. Tests use it to prove that a rebuild produces the
// same tables as the live projections.
func (s *Store) Dump(ctx context.Context) (map[string][]map[string]any, error) {
	out := make(map[string][]map[string]any, len(ProjectionTables))
	for _, t := range ProjectionTables {
		rows, err := s.r.QueryContext(ctx, "SELECT * FROM "+t+" ORDER BY "+tableOrder[t])
		if err != nil {
			return nil, fmt.Errorf("readmodels: dump %s: %w", t, classify(err))
		}
		list, err := scanMaps(rows)
		if err != nil {
			return nil, fmt.Errorf("readmodels: dump %s: %w", t, classify(err))
		}
		out[t] = list
	}
	return out, nil
}

func scanMaps(rows *sql.Rows) ([]map[string]any, error) {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	list := []map[string]any{}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		m := make(map[string]any, len(cols))
		for i, c := range cols {
			if b, ok := vals[i].([]byte); ok {
				vals[i] = string(b) // comparable, readable in test failures
			}
			m[c] = vals[i]
		}
		list = append(list, m)
	}
	return list, rows.Err()
}

// ParkedEvent is an event a projection or reactor gave up on after its
// retries; it was skipped and its checkpoint moved past it.
type ParkedEvent struct {
	Projection string              `json:"projection"`
	Position   eventstore.Position `json:"position"`
	EventID    string              `json:"event_id"`
	EventType  string              `json:"event_type"`
	Error      string              `json:"error"`
	Attempts   int                 `json:"attempts"`
	ParkedAt   time.Time           `json:"parked_at"`
	Stream     string              `json:"stream"`
	Version    int64               `json:"version"`
}

// Parked lists every parked event, by projection and time parked.
func (s *Store) Parked(ctx context.Context) ([]ParkedEvent, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+parkedColumns+`
		FROM parked_events ORDER BY projection, parked_at, event_id`)
	if err != nil {
		return nil, fmt.Errorf("readmodels: parked: %w", classify(err))
	}
	defer rows.Close()
	out := []ParkedEvent{}
	for rows.Next() {
		p, err := scanParked(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readmodels: parked: %w", classify(err))
	}
	return out, nil
}
