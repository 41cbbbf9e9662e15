package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStmts bounds a stmtCache: statement texts are few and fixed,
// except those naming a rebuild's shadow tables, which must not pile up.
const maxCachedStmts = 256

// stmtCache keeps the statements run on one SQLite pool prepared, by their
// text. modernc.org/sqlite parses a statement anew on every call unless it
// is prepared: parsing cost more than running the read-model writes did.
// database/sql prepares a pooled statement on each connection the first
// time it runs there and reuses it after. PostgreSQL has no cache here:
// pgx caches prepared statements per connection itself.
type stmtCache struct {
	db       *sql.DB
	mu       sync.Mutex
	stmts    map[string]*sql.Stmt
	prepared int // statements prepared, on the pool or in a transaction (tests)
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}}
}

// get returns q's statement, preparing it on the pool when it is new; nil
// when it cannot be cached (the cache is full, or preparing failed: the
// caller runs q unprepared, which reports the same error).
func (c *stmtCache) get(ctx context.Context, q string) *sql.Stmt {
	if st := c.lookup(q); st != nil {
		return st
	}
	st, err := c.db.PrepareContext(ctx, q)
	c.count()
	if err != nil {
		return nil
	}
	return c.keep(q, st)
}

func (c *stmtCache) lookup(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[q]
}

// keep caches st as q's statement and returns the one cached, or closes st
// and returns nil when the cache is full.
func (c *stmtCache) keep(q string, st *sql.Stmt) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	if have := c.stmts[q]; have != nil { // prepared meanwhile by another caller
		_ = st.Close()
		return have
	}
	if len(c.stmts) >= maxCachedStmts {
		_ = st.Close()
		return nil
	}
	c.stmts[q] = st
	return st
}

func (c *stmtCache) count() {
	c.mu.Lock()
	c.prepared++
	c.mu.Unlock()
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for q, st := range c.stmts {
		errs = append(errs, st.Close())
		delete(c.stmts, q)
	}
	return errors.Join(errs...)
}

// execer is what writes need from a pool or a transaction.
type execer interface {
	querier
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// cachedDB runs statements on a pool through its cache.
type cachedDB struct {
	db    *sql.DB
	cache *stmtCache
}

func (d cachedDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st := d.cache.get(ctx, q); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return d.db.ExecContext(ctx, q, args...)
}

func (d cachedDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st := d.cache.get(ctx, q); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return d.db.QueryContext(ctx, q, args...)
}

func (d cachedDB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st := d.cache.get(ctx, q); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return d.db.QueryRowContext(ctx, q, args...)
}

// cachedTx runs statements in a transaction on the write pool's one
// connection through the pool's cache. A statement the cache lacks cannot
// be prepared on the pool meanwhile (the transaction holds its only
// connection): it is prepared in the transaction, and on the pool once the
// transaction has ended (flush).
type cachedTx struct {
	tx      *sql.Tx
	cache   *stmtCache
	local   map[string]*sql.Stmt // bound to tx
	pending []string             // met in tx, not yet in the cache
}

func (t *cachedTx) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := t.local[q]; ok {
		return st, nil
	}
	var st *sql.Stmt
	if shared := t.cache.lookup(q); shared != nil {
		st = t.tx.StmtContext(ctx, shared)
	} else {
		var err error
		st, err = t.tx.PrepareContext(ctx, q)
		t.cache.count()
		if err != nil {
			return nil, err
		}
		t.pending = append(t.pending, q)
	}
	if t.local == nil {
		t.local = map[string]*sql.Stmt{}
	}
	t.local[q] = st
	return st, nil
}

// flush prepares on the pool the statements met in the ended transaction.
// A nil t has none.
func (t *cachedTx) flush(ctx context.Context) {
	if t == nil {
		return
	}
	for _, q := range t.pending {
		if t.cache.lookup(q) == nil {
			t.cache.get(ctx, q)
		}
	}
	t.pending = nil
}

func (t *cachedTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := t.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (t *cachedTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (t *cachedTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := t.stmt(ctx, q)
	if err != nil {
		// A Row that reports err: run q unprepared, which fails alike.
		return t.tx.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
