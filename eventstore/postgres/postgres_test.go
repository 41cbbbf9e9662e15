package postgres_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/eventstoretest"
	"evident/eventstore/postgres"
	"evident/internal/pgtest"
)

// Each subtest gets its own schema, as a fresh install would.
func TestConformance(t *testing.T) {
	t.Parallel()
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		_, s := open(t, pgtest.URL(t))
		return s
	})
}

// TestConformanceSharedSchema runs the suite with every subtest on one
// schema and one pool, so the tests meet each other's events and appends, as
// production callers do.
func TestConformanceSharedSchema(t *testing.T) {
	t.Parallel()
	pool, _ := open(t, pgtest.URL(t))
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		s, err := postgres.New(t.Context(), pool)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

func newPool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func open(t testing.TB, url string) (*pgxpool.Pool, *postgres.Store) {
	t.Helper()
	pool := newPool(t, url)
	s, err := postgres.New(context.Background(), pool)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return pool, s
}

func ev(typ string) eventstore.EventData {
	return eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(`{}`), Metadata: json.RawMessage(`{}`)}
}

func TestNewMigratesOnceAndLeavesPoolOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, s := open(t, pgtest.URL(t))
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)

	again, err := postgres.New(ctx, pool)
	require.NoError(t, err, "a second New on a migrated schema")
	n, err := again.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "migrating again keeps the log")

	var version int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT MAX(version_id) FROM goose_eventstore`).Scan(&version))
	assert.Equal(t, int64(5), version, "every migration applied once")

	// Start the listener, then close: the pool must survive both.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_ = again.Wait(wctx, eventstore.Position{Commit: 1 << 62})
	cancel()
	require.NoError(t, s.Close())
	require.NoError(t, again.Close())
	assert.NoError(t, pool.Ping(ctx), "Close leaves the caller's pool open")
}

// Several processes starting at once on an empty schema: the advisory lock
// lets exactly one migrate and the others find the tables there.
func TestConcurrentNew(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		pool := newPool(t, url)
		wg.Go(func() {
			s, err := postgres.New(t.Context(), pool)
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		assert.NoError(t, err)
	}
}

// Wait wakes within ~100 ms of an append committed through another pool
// (another process, as far as the server can tell).
func TestWaitWakesPromptlyOnAnotherConnectionsAppend(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	_, waiter := open(t, url)
	_, writer := open(t, url)
	ctx := t.Context()

	head, err := writer.Append(ctx, eventstore.AppendRequest{Stream: "w", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
	// The first Wait starts the listener; let it connect.
	require.NoError(t, waiter.Wait(ctx, head.Position))

	var worst time.Duration
	for round := range 5 {
		after := head.Position
		woke := make(chan time.Time, 1)
		entered := make(chan struct{})
		go func() {
			close(entered)
			if err := waiter.Wait(ctx, after); err != nil {
				t.Error(err)
			}
			woke <- time.Now()
		}()
		<-entered
		time.Sleep(20 * time.Millisecond) // let it block; the fallback is a second away
		head, err = writer.Append(ctx, eventstore.AppendRequest{Stream: "w", Expected: int64(round), Events: []eventstore.EventData{ev("x")}})
		require.NoError(t, err)
		appended := time.Now()
		select {
		case at := <-woke:
			worst = max(worst, at.Sub(appended))
		case <-time.After(2 * time.Second):
			t.Fatal("Wait did not wake")
		}
		evs, err := waiter.ReadAll(ctx, after, 10)
		require.NoError(t, err)
		require.Len(t, evs, 1)
	}
	t.Logf("slowest wake-up after another connection's append: %s", worst)
	assert.Less(t, worst, 100*time.Millisecond)
}

// A listener whose connection is killed reconnects, and Wait wakes on
// notifications again.
func TestListenerReconnects(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	pool, waiter := open(t, url)
	_, writer := open(t, url)
	ctx := t.Context()

	head, err := writer.Append(ctx, eventstore.AppendRequest{Stream: "r", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
	require.NoError(t, waiter.Wait(ctx, head.Position)) // starts the listener

	var schema string
	require.NoError(t, pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema))
	kill := func() int {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE query = 'LISTEN "evident_events:' || $1 || '"'`, schema).Scan(&n))
		return n
	}
	require.Eventually(t, func() bool { return kill() == 1 }, 2*time.Second, 10*time.Millisecond, "kill the listener")

	// Once it is back, a notification from the writer wakes the waiter well
	// before the fallback would.
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE query = 'LISTEN "evident_events:' || $1 || '"'`, schema).Scan(&n))
		return n == 1
	}, 5*time.Second, 10*time.Millisecond, "the listener reconnects")
	woke := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		_ = waiter.Wait(ctx, head.Position)
		woke <- time.Since(start)
	}()
	time.Sleep(20 * time.Millisecond)
	_, err = writer.Append(ctx, eventstore.AppendRequest{Stream: "r", Expected: 0, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
	assert.Less(t, <-woke, 500*time.Millisecond)
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("server not listening", func(t *testing.T) {
		pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=2")
		require.NoError(t, err)
		defer pool.Close()
		_, err = postgres.New(ctx, pool)
		assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	})

	t.Run("pool closed under the store", func(t *testing.T) {
		url := pgtest.URL(t)
		pool := newPool(t, url)
		s, err := postgres.New(ctx, pool)
		require.NoError(t, err)
		defer s.Close()
		pool.Close()

		_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "u", Expected: eventstore.Any, Events: []eventstore.EventData{ev("x")}})
		assert.ErrorIs(t, err, eventstore.ErrUnavailable, "append")
		_, err = s.ReadStream(ctx, "u", 0)
		assert.ErrorIs(t, err, eventstore.ErrUnavailable, "read stream")
		_, err = s.ReadAll(ctx, eventstore.Position{}, 10)
		assert.ErrorIs(t, err, eventstore.ErrUnavailable, "read all")
		assert.ErrorIs(t, s.Wait(ctx, eventstore.Position{}), eventstore.ErrUnavailable, "wait")
		_, err = s.Count(ctx)
		assert.ErrorIs(t, err, eventstore.ErrUnavailable, "count")
	})

	t.Run("connection terminated by the server", func(t *testing.T) {
		url := pgtest.URL(t)
		cfg, err := pgxpool.ParseConfig(url)
		require.NoError(t, err)
		cfg.MaxConns = 1
		cfg.ConnConfig.RuntimeParams["application_name"] = "evident-unavailable-" + uuid.NewString()
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		require.NoError(t, err)
		defer pool.Close()
		s, err := postgres.New(ctx, pool)
		require.NoError(t, err)
		defer s.Close()

		admin := newPool(t, url)
		var n int
		require.NoError(t, admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
			cfg.ConnConfig.RuntimeParams["application_name"]).Scan(&n))
		require.Equal(t, 1, n)
		// The pool's one connection is dead; the next use finds out.
		_, err = s.Count(ctx)
		assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	})
}
