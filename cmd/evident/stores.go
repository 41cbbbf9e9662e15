package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"evident/eventstore"
	"evident/eventstore/kurrentdb"
	"evident/eventstore/postgres"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
	"evident/readmodels"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// stores are the event store and the read-model store a configuration names.
type stores struct {
	events eventstore.Store
	rm     *readmodels.Store
	// leases share the workers among processes on one PostgreSQL; nil on
	// SQLite, where the data-directory lock allows one process.
	leases *readmodels.Leases
	ping   func(context.Context) error
	close  []func() error
}

// Close releases what openStores acquired, in reverse order.
func (s *stores) Close() error {
	var errs []error
	for i := len(s.close) - 1; i >= 0; i-- {
		errs = append(errs, s.close[i]())
	}
	s.close = nil
	return errors.Join(errs...)
}

// backend says where events and read models live.
type backend int

const (
	embedded   backend = iota // one SQLite file
	postgresql                // PostgreSQL for both (one database or two)
)

func (c Config) backend() backend {
	if c.EventStoreURL == "" && c.DatabaseURL == "" {
		return embedded
	}
	return postgresql
}

// openStores opens and migrates the stores. exclusive (serve, rebuild) takes
// the embedded store's directory lock; the read-only tools do not.
func openStores(ctx context.Context, cfg Config, exclusive bool) (*stores, error) {
	s := &stores{}
	var err error
	switch cfg.backend() {
	case embedded:
		err = s.openEmbedded(ctx, cfg, exclusive)
	case postgresql:
		err = s.openPostgres(ctx, cfg)
	}
	if err == nil {
		err = s.rm.Migrate(ctx)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *stores) openEmbedded(ctx context.Context, cfg Config, exclusive bool) error {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if exclusive {
		lock, err := lockDir(cfg.DataDir)
		if err != nil {
			return err
		}
		s.close = append(s.close, lock.Close)
	}
	db, err := sqlitedb.Open(cfg.embeddedFile())
	if err != nil {
		return err
	}
	s.close = append(s.close, db.Close)
	events, err := sqlite.New(db)
	if err != nil {
		return fmt.Errorf("event store: %w", err)
	}
	s.events = events
	s.close = append(s.close, events.Close)
	if s.rm, err = readmodels.Open(ctx, readmodels.DialectSQLite, db.Write, db.Read, cfg.readModelOptions()...); err != nil {
		return fmt.Errorf("read models: %w", err)
	}
	s.close = append(s.close, s.rm.Close)
	s.ping = db.Read.PingContext
	return nil
}

// openPostgres opens PostgreSQL read models, with the events in the same
// or another PostgreSQL database, or in KurrentDB.
func (s *stores) openPostgres(ctx context.Context, cfg Config) error {
	eventsURL, rmURL := cfg.EventStoreURL, cfg.DatabaseURL
	if eventsURL == "" {
		eventsURL = rmURL
	}
	if rmURL == "" {
		rmURL = eventsURL
	}
	var (
		eventsPool *pgxpool.Pool
		err        error
	)
	if kurrentdb.Handles(eventsURL) {
		events, err := kurrentdb.New(ctx, eventsURL)
		if err != nil {
			return fmt.Errorf("event store: %w", err)
		}
		s.events = events
		s.close = append(s.close, events.Close)
	} else {
		if eventsPool, err = pool(ctx, eventsURL); err != nil {
			return fmt.Errorf("event store: %w", err)
		}
		s.close = append(s.close, func() error { eventsPool.Close(); return nil })
		events, err := postgres.New(ctx, eventsPool)
		if err != nil {
			return fmt.Errorf("event store: %w", err)
		}
		s.events = events
		s.close = append(s.close, events.Close)
	}

	rmPool := eventsPool
	if rmURL != eventsURL {
		if rmPool, err = pool(ctx, rmURL); err != nil {
			return fmt.Errorf("read models: %w", err)
		}
		s.close = append(s.close, func() error { rmPool.Close(); return nil })
	}
	db := stdlib.OpenDBFromPool(rmPool)
	s.close = append(s.close, db.Close)
	if s.rm, err = readmodels.Open(ctx, readmodels.DialectPostgres, db, db, cfg.readModelOptions()...); err != nil {
		return fmt.Errorf("read models: %w", err)
	}
	s.close = append(s.close, s.rm.Close) // its notifier, before the pool closes
	if s.leases, err = s.rm.Leases(readmodels.LeaseOptions{}); err != nil {
		return fmt.Errorf("leases: %w", err)
	}
	s.ping = rmPool.Ping
	return nil
}

// defaultPoolConns is the size of a PostgreSQL pool whose URL does not set
// pool_max_conns.
const defaultPoolConns = 16

// pool connects to PostgreSQL and checks the server answers, so a wrong URL
// fails start-up with a clear message instead of the first request.
//
// Unless the URL sets pool_max_conns, the pool holds up to defaultPoolConns
// connections: pgx's own default (max(4, cores)) is shared by HTTP
// commands, every projection and workflow, and the lease connection, which
// holds one for good.
func pool(ctx context.Context, raw string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(raw), err)
	}
	if !strings.Contains(raw, "pool_max_conns") {
		cfg.MaxConns = defaultPoolConns
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(raw), err)
	}
	if err := p.Ping(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("%s is not reachable: %w", redactURL(raw), err)
	}
	return p, nil
}

// lockDir takes an exclusive lock on the data directory, so that two
// processes never project into one SQLite file at once.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "evident.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another evident process uses %s (stop it first): %w", dir, err)
	}
	return f, nil
}

// validURL checks a store URL's scheme.
func validURL(name, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: not a URL: %w", name, err)
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return nil
		}
	}
	return fmt.Errorf("%s %q: want a %s URL", name, redactURL(raw), strings.Join(schemes, ":// or ")+"://")
}

// storeName says where the stores are, for the start-up log (no passwords).
func (c Config) storeName() string {
	if c.backend() == embedded {
		return "sqlite:" + c.embeddedFile()
	}
	events, rm := c.EventStoreURL, c.DatabaseURL
	if events == "" {
		events = rm // the events live with the read models
	}
	if rm == "" {
		rm = events
	}
	return "events=" + redactURL(events) + " read_models=" + redactURL(rm)
}

// readModelOptions: a pending idempotency claim outlives any request that is
// still running (the read-your-writes wait bounds it), then retries may take it over.
func (c Config) readModelOptions() []readmodels.Option {
	return []readmodels.Option{readmodels.WithIdempotencyLease(3*c.ReadWaitTimeout + 5*time.Second)}
}

// embeddedFile is the embedded store's SQLite file.
func (c Config) embeddedFile() string { return filepath.Join(c.DataDir, "evident.db") }
