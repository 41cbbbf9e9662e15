package main

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"evident/api"
	"evident/commands"
	"evident/eventstore"
	evpg "evident/eventstore/postgres"
	evsqlite "evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
	"evident/projections"
	"evident/readmodels"
)

// evidentApp is Evident wired as cmd/evident wires it for `serve` (that
// package is a main package, so the wiring is repeated here): the event
// store, the read models, the command handler, the projections runner
// with the session-cleanup workflow, the expiry workflow and the HTTP API.
type evidentApp struct {
	backend string
	events  eventstore.Store
	rm      *readmodels.Store
	rmRead  *sql.DB // the read models' read pool, for EXPLAIN
	pool    *pgxpool.Pool
	lite    *sqlitedb.DB
	cmd     *commands.Handler
	runner  *projections.Runner
	api     *api.Server
	closers []func()

	stop context.CancelFunc
	bg   sync.WaitGroup
	srv  *http.Server
	addr string
}

var quiet = slog.New(slog.DiscardHandler)

// openApp opens a fresh Evident on backend ("PostgreSQL" or "SQLite").
// conns sizes the PostgreSQL pool shared by events and read models, as one
// `evident serve` with EVIDENT_DATABASE_URL…?pool_max_conns=conns would.
func openApp(ctx context.Context, w where, backend string, conns int) (*evidentApp, error) {
	a := &evidentApp{backend: backend}
	fail := func(err error) (*evidentApp, error) { a.Close(); return nil, err }
	var leases *readmodels.Leases
	switch backend {
	case "PostgreSQL":
		sc, err := w.pg.freshSchema(ctx)
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, sc.Drop)
		pool, err := sc.pool(ctx, conns)
		if err != nil {
			return fail(err)
		}
		a.closers = append(a.closers, pool.Close)
		a.pool = pool
		st, err := evpg.New(ctx, pool)
		if err != nil {
			return fail(err)
		}
		a.events = st
		a.closers = append(a.closers, func() { st.Close() })
		db := stdlib.OpenDBFromPool(pool)
		a.closers = append(a.closers, func() { db.Close() })
		if a.rm, err = readmodels.Open(ctx, readmodels.DialectPostgres, db, db, readmodels.WithIdempotencyLease(20*time.Second)); err != nil {
			return fail(err)
		}
		a.rmRead = db
		if err := a.rm.Migrate(ctx); err != nil {
			return fail(err)
		}
		if leases, err = a.rm.Leases(readmodels.LeaseOptions{}); err != nil {
			return fail(err)
		}
	default:
		dir, err := os.MkdirTemp(w.tmp, "app-*")
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, func() { os.RemoveAll(dir) })
		db, err := sqlitedb.Open(filepath.Join(dir, "evident.db"))
		if err != nil {
			return fail(err)
		}
		a.closers = append(a.closers, func() { db.Close() })
		a.lite = db
		st, err := evsqlite.New(db)
		if err != nil {
			return fail(err)
		}
		a.events = st
		a.closers = append(a.closers, func() { st.Close() })
		if a.rm, err = readmodels.Open(ctx, readmodels.DialectSQLite, db.Write, db.Read, readmodels.WithIdempotencyLease(20*time.Second)); err != nil {
			return fail(err)
		}
		a.rmRead = db.Read
		if err := a.rm.Migrate(ctx); err != nil {
			return fail(err)
		}
	}

	rm := a.rm
	a.closers = append(a.closers, func() { rm.Close() }) // before the pools and files close
	waiter := &lateWaiter{}
	a.cmd = commands.NewHandler(a.events, a.rm, a.rm, waiter, commands.Options{
		MaxRetries: 5, PasswordCost: 10, Logger: quiet,
	})
	opts := projections.Options{MaxRetries: 5, RetryDelay: 100 * time.Millisecond, Logger: quiet,
		Reactors: []projections.Reactor{commands.NewSessionCleanup(a.cmd, 30*time.Second)}}
	if leases != nil {
		opts.Leases = projections.StoreLeases(leases)
	}
	a.runner = projections.NewRunner(a.events, a.rm, projections.All(), opts)
	waiter.r = a.runner
	a.api = api.NewServer(a.cmd, a.rm, readSide{r: a.runner}, api.Options{WaitTimeout: 5 * time.Second, Logger: quiet})
	return a, nil
}

type lateWaiter struct{ r *projections.Runner }

func (w *lateWaiter) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return w.r.WaitFor(ctx, pos)
}

// readSide is what the API asks of the projections. It embeds the
// interface so that methods the API adds later compile here; the scenarios
// only reach WaitFor.
type readSide struct {
	api.ReadSide
	r *projections.Runner
}

func (r readSide) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return r.r.WaitFor(ctx, pos)
}
func (r readSide) Ready(context.Context) error { return nil }
func (r readSide) Status(context.Context) any  { return r.r.Status() }

// start runs the projections, the workflows and (withHTTP) the API on a
// loopback port, as `evident serve` does.
func (a *evidentApp) start(withHTTP bool) error {
	ctx, stop := context.WithCancel(context.Background())
	a.stop = stop
	a.bg.Go(func() { _ = a.runner.Run(ctx) })
	expiry := commands.NewExpiry(a.cmd, a.rm, time.Second)
	a.bg.Go(func() { _ = expiry.Run(ctx) })
	if !withHTTP {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	a.addr = ln.Addr().String()
	a.srv = &http.Server{Handler: a.api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	a.bg.Go(func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("bench: serve", "err", err)
		}
	})
	return nil
}

// Close stops what start started and releases what openApp opened.
func (a *evidentApp) Close() {
	if a.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = a.srv.Shutdown(ctx)
		cancel()
	}
	if a.stop != nil {
		a.stop()
	}
	a.bg.Wait()
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}
