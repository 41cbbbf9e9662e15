package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"
)

// LeaseOptions tune Leases; the zero value works.
type LeaseOptions struct {
	// RetryInterval is how often Acquire tries a lease another process
	// holds. Default 500ms.
	RetryInterval time.Duration
	// PingInterval is how often the session holding leases is checked.
	// Default 1s.
	PingInterval time.Duration
	// PingTimeout bounds each check (and each lock statement). Default 2s.
	PingTimeout time.Duration
	// ServerTimeout makes the server end the session (releasing its locks)
	// once it has been silent that long, so that a holder cut off by the
	// network or frozen does not keep its leases until TCP gives up
	// (idle_session_timeout, PostgreSQL 14+; ignored by older servers).
	// Default 5s; it must exceed PingInterval.
	ServerTimeout time.Duration
}

func (o LeaseOptions) withDefaults() LeaseOptions {
	if o.RetryInterval <= 0 {
		o.RetryInterval = 500 * time.Millisecond
	}
	if o.PingInterval <= 0 {
		o.PingInterval = time.Second
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = 2 * time.Second
	}
	if o.ServerTimeout <= 0 {
		o.ServerTimeout = 5 * time.Second
	}
	o.ServerTimeout = max(o.ServerTimeout, 2*o.PingInterval)
	return o
}

// Leases hands out named, exclusive leases among every process sharing a
// PostgreSQL database (and schema): the right to run one projection or
// reactor. A lease is a session advisory lock (pg_try_advisory_lock) taken
// on one connection of the write pool that this process keeps for its
// leases while it holds or waits for any; the server frees the locks when
// that session ends, however it ends, so a process that dies loses its
// leases at once and another takes them over within RetryInterval.
//
// The connection is checked every PingInterval; when a check fails, every
// lease of the session is lost (Lease.Lost is closed), because the server
// may already have given the locks to another process. A lease therefore
// says "probably the only holder"; what makes a late writer harmless is
// Tx.AdvanceCheckpoint.
//
// Leases pins one connection of the write pool while it holds or waits for a
// lease; Store.Listen pins another. Size the pool for both.
type Leases struct {
	db   *sql.DB
	opts LeaseOptions

	mu   sync.Mutex
	sess *leaseSession // nil while no lease is held or wanted
}

type leaseSession struct {
	// stmt serialises the statements on conn: database/sql lets a second
	// statement start on a Conn while the rows of the first are read, which
	// the driver does not survive.
	stmt   sync.Mutex
	conn   *sql.Conn
	schema string
	lost   chan struct{} // closed when the session ended
	done   bool          // lost is closed
	keys   map[int64]bool
	users  int // holders and waiting acquirers: the last one ends the session
}

// Leases returns the Store's leases (PostgreSQL only: on SQLite a file lock
// already keeps a second process from running, so there is nothing to
// share). It starts nothing; Acquire does.
func (s *Store) Leases(opts LeaseOptions) (*Leases, error) {
	if s.dialect != DialectPostgres {
		return nil, fmt.Errorf("readmodels: leases need PostgreSQL, not %s", s.dialect)
	}
	return &Leases{db: s.write, opts: opts.withDefaults()}, nil
}

// Lease is a held lease. Release it when done; Lost is closed when it may
// have gone to another process.
type Lease struct {
	l    *Leases
	s    *leaseSession
	key  int64
	name string
	once sync.Once
}

// Lost is closed when the lease may have been lost: its session failed a
// check or a statement. Release does not close it.
func (le *Lease) Lost() <-chan struct{} { return le.s.lost }

// Name is what the lease was acquired for.
func (le *Lease) Name() string { return le.name }

// Release gives the lease up. It is safe to call more than once.
func (le *Lease) Release() {
	le.once.Do(func() { le.l.release(le) })
}

// Acquire blocks until this process holds the lease called name, trying
// every RetryInterval while another process (or another caller of these
// Leases) holds it. It returns ctx.Err() when ctx ends first, and an error
// wrapping ErrUnavailable when the database fails; call it again then.
func (l *Leases) Acquire(ctx context.Context, name string) (*Lease, error) {
	var s *leaseSession // in use by this call while set
	defer func() {
		if s != nil {
			l.unuse(s)
		}
	}()
	for {
		if s != nil && l.ended(s) {
			l.unuse(s)
			s = nil
		}
		if s == nil {
			var err error
			if s, err = l.use(ctx); err != nil {
				return nil, err
			}
		}
		key := leaseKey(s.schema, name)
		got, err := l.tryLock(s, key)
		if err != nil {
			l.fail(s)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("readmodels: lease %s: %w", name, classify(err))
		}
		if got {
			le := &Lease{l: l, s: s, key: key, name: name}
			s = nil // the lease keeps it in use
			return le, nil
		}
		t := time.NewTimer(l.opts.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func (l *Leases) ended(s *leaseSession) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return s.done
}

// tryLock takes key on the session unless this process holds it already
// (session advisory locks are re-entrant: the server would say yes twice).
func (l *Leases) tryLock(s *leaseSession, key int64) (bool, error) {
	l.mu.Lock()
	if s.done || s.keys[key] {
		l.mu.Unlock()
		return false, nil
	}
	s.keys[key] = true // reserved while the statement runs
	l.mu.Unlock()

	// Not the caller's ctx: cancelling a statement may break the connection,
	// and with it every lease of the session.
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.PingTimeout)
	defer cancel()
	var got bool
	err := s.query(ctx, `SELECT pg_try_advisory_lock($1)`, key, &got)

	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || !got {
		delete(s.keys, key)
		return false, err
	}
	if s.done { // the session failed meanwhile: the lock went with it
		delete(s.keys, key)
		return false, nil
	}
	return true, nil
}

func (l *Leases) release(le *Lease) {
	s := le.s
	l.mu.Lock()
	alive := !s.done
	l.mu.Unlock()
	if alive {
		ctx, cancel := context.WithTimeout(context.Background(), l.opts.PingTimeout)
		var ok bool
		err := s.query(ctx, `SELECT pg_advisory_unlock($1)`, le.key, &ok)
		cancel()
		if err != nil || !ok {
			l.fail(s) // ending the session is the unlock that cannot fail
		}
	}
	l.mu.Lock()
	delete(s.keys, le.key)
	l.mu.Unlock()
	l.unuse(s)
}

// use returns the current session, opening one when there is none, and
// counts the caller as its user.
func (l *Leases) use(ctx context.Context) (*leaseSession, error) {
	l.mu.Lock()
	if s := l.sess; s != nil && !s.done {
		s.users++
		l.mu.Unlock()
		return s, nil
	}
	l.mu.Unlock()

	s, err := l.open(ctx)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.sess; cur != nil && !cur.done { // another caller was quicker
		cur.users++
		go discard(s.conn)
		return cur, nil
	}
	l.sess = s
	s.users++
	go l.watch(s)
	return s, nil
}

func (l *Leases) open(ctx context.Context) (*leaseSession, error) {
	conn, err := l.db.Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("readmodels: lease session: %w", classify(err))
	}
	s := &leaseSession{conn: conn, lost: make(chan struct{}), keys: map[int64]bool{}}
	err = conn.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&s.schema)
	if err == nil {
		_, err = conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`,
			fmt.Sprint(l.opts.ServerTimeout.Milliseconds()))
		if isUndefinedParameter(err) { // before PostgreSQL 14
			err = nil
		}
	}
	if err != nil {
		discard(conn)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("readmodels: lease session: %w", classify(err))
	}
	return s, nil
}

// unuse drops a user; the last one closes the session.
func (l *Leases) unuse(s *leaseSession) {
	l.mu.Lock()
	s.users--
	last := s.users == 0
	if last {
		l.endLocked(s)
	}
	l.mu.Unlock()
}

// fail ends the session: its leases are lost.
func (l *Leases) fail(s *leaseSession) {
	l.mu.Lock()
	l.endLocked(s)
	l.mu.Unlock()
}

func (l *Leases) endLocked(s *leaseSession) {
	if s.done {
		return
	}
	s.done = true
	close(s.lost)
	if l.sess == s {
		l.sess = nil
	}
	go func() {
		s.stmt.Lock() // after the statement in flight
		defer s.stmt.Unlock()
		discard(s.conn)
	}()
}

// query runs a one-row, one-column statement on the session.
func (s *leaseSession) query(ctx context.Context, q string, arg, dest any) error {
	s.stmt.Lock()
	defer s.stmt.Unlock()
	return s.conn.QueryRowContext(ctx, q, arg).Scan(dest)
}

// watch checks the session every PingInterval until it ends.
func (l *Leases) watch(s *leaseSession) {
	t := time.NewTicker(l.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.lost:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.opts.PingTimeout)
		s.stmt.Lock()
		err := s.conn.PingContext(ctx)
		s.stmt.Unlock()
		cancel()
		if err != nil {
			l.fail(s)
			return
		}
	}
}

// leaseKey is the advisory lock key of a lease: a hash of the schema and the
// name, as advisory locks are per database, not per schema.
func leaseKey(schema, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("evident.lease\x00" + schema + "\x00" + name))
	return int64(h.Sum64())
}

func isUndefinedParameter(err error) bool {
	var pe interface{ SQLState() string }
	return errors.As(err, &pe) && pe.SQLState() == "42704"
}
