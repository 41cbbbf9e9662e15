package readmodels_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
	"evident/readmodels"
)

// instance is one process's view of a shared PostgreSQL schema.
type instance struct {
	rm  *readmodels.Store
	app string // application_name of its sessions
	url string
}

// instances opens n Stores on one fresh schema, each on a pool of its own.
func instances(t *testing.T, n int) []instance {
	t.Helper()
	url := pgtest.URL(t)
	var out []instance
	for i := range n {
		app := "evident-test-" + rand.Text()[:12]
		db := openPostgres(t, url, app)
		rm, err := readmodels.Open(context.Background(), readmodels.DialectPostgres, db, db)
		require.NoError(t, err)
		if i == 0 {
			require.NoError(t, rm.Migrate(context.Background()))
		}
		out = append(out, instance{rm: rm, app: app, url: url})
	}
	return out
}

// cutOff ends every session of the instance on the server, as a crash of
// the database side or a network cut would.
func (in instance) cutOff(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, in.url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, in.app)
	require.NoError(t, err)
}

func TestListenHearsAnotherInstance(t *testing.T) {
	t.Parallel()
	in := instances(t, 2)
	a, b := in[0], in[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.rm.Listen(ctx) }()
	require.Eventually(t, a.rm.Listening, 5*time.Second, 10*time.Millisecond)

	ch := a.rm.CheckpointsChanged()
	require.NoError(t, b.rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint("users", eventstore.At(9))
	}))
	assertClosed(t, ch, 2*time.Second)

	a.cutOff(t)
	select {
	case err := <-done:
		assert.ErrorIs(t, err, readmodels.ErrUnavailable)
	case <-time.After(10 * time.Second):
		t.Fatal("Listen did not notice its connection died")
	}
	assert.False(t, a.rm.Listening())

	go func() { done <- a.rm.Listen(ctx) }()
	require.Eventually(t, a.rm.Listening, 5*time.Second, 10*time.Millisecond, "listens again")
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err, "ctx ended")
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return when ctx ended")
	}
}

func TestLeasesAreExclusiveAndFailOver(t *testing.T) {
	t.Parallel()
	in := instances(t, 2)
	opts := readmodels.LeaseOptions{RetryInterval: 50 * time.Millisecond, PingInterval: 100 * time.Millisecond}
	la, err := in[0].rm.Leases(opts)
	require.NoError(t, err)
	lb, err := in[1].rm.Leases(opts)
	require.NoError(t, err)
	ctx := context.Background()
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 400*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}

	users, err := la.Acquire(ctx, "users")
	require.NoError(t, err)
	_, err = lb.Acquire(short(), "users")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "held by the other instance")
	_, err = la.Acquire(short(), "users")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "held by this instance: not re-entrant")
	audit, err := lb.Acquire(ctx, "audit")
	require.NoError(t, err, "another name is free")

	users.Release()
	users.Release()
	got, err := lb.Acquire(short(), "users")
	require.NoError(t, err, "released leases go to the next")
	got.Release()
	audit.Release()

	// Losing the session loses the lease, and the other instance takes over.
	sessions, err := la.Acquire(ctx, "sessions")
	require.NoError(t, err)
	t.Cleanup(sessions.Release)
	waiting := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		le, err := lb.Acquire(c, "sessions")
		if err == nil {
			defer le.Release()
		}
		waiting <- err
	}()
	select {
	case err := <-waiting:
		t.Fatalf("acquired a held lease: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	in[0].cutOff(t)
	assertClosed(t, sessions.Lost(), 5*time.Second)
	select {
	case err := <-waiting:
		require.NoError(t, err, "failed over")
	case <-time.After(5 * time.Second):
		t.Fatal("no failover")
	}
	sessions.Release()

	// The instance that lost its session can lease again.
	again, err := la.Acquire(short(), "sessions")
	require.NoError(t, err)
	again.Release()
}

func TestLeasesNeedPostgres(t *testing.T) {
	t.Parallel()
	_, err := newStore(t, readmodels.DialectSQLite).Leases(readmodels.LeaseOptions{})
	assert.Error(t, err)
}

func TestPostgresOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	in := instances(t, 1)[0]
	ctx := context.Background()

	// The server ends the session in the middle of a transaction.
	err := in.rm.Update(ctx, func(tx *readmodels.Tx) error {
		if err := tx.SetCheckpoint("users", eventstore.At(1)); err != nil {
			return err
		}
		in.cutOff(t)
		return tx.SetCheckpoint("audit", eventstore.At(1))
	})
	require.Error(t, err)
	assert.ErrorIs(t, err, readmodels.ErrUnavailable)

	// The pool is gone.
	cfg, err := pgxpool.ParseConfig(in.url)
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	rm, err := readmodels.Open(ctx, readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	pool.Close()
	_, err = rm.Checkpoint(ctx, "users")
	require.Error(t, err)
	assert.ErrorIs(t, err, readmodels.ErrUnavailable, "%v", err)

	// A statement that is wrong is not an outage.
	err = in.rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.Park(readmodels.ParkedEvent{Projection: "p", EventID: string([]byte{0}), Position: eventstore.At(1)})
	})
	require.Error(t, err)
	assert.False(t, errors.Is(err, readmodels.ErrUnavailable), "%v", err)
}

// UpdateAsync turns off the wait for the WAL flush for its transaction
// alone, with its checkpoint: the next transaction on the pool waits again.
func TestUpdateAsyncIsForOneTransaction(t *testing.T) {
	t.Parallel()
	rm := newStore(t, readmodels.DialectPostgres)
	ctx := t.Context()
	setting := func(async bool) string {
		var v string
		update := rm.Update
		if async {
			update = rm.UpdateAsync
		}
		require.NoError(t, update(ctx, func(tx *readmodels.Tx) error {
			// It takes effect with the checkpoint, the last statement.
			if err := tx.AdvanceCheckpoint("async-test-"+rand.Text()[:8], eventstore.Position{}, eventstore.At(1)); err != nil {
				return err
			}
			var err error
			v, err = tx.Setting("synchronous_commit")
			return err
		}))
		return v
	}
	assert.Equal(t, "off", setting(true))
	for range 3 { // whichever pooled connection the next one gets
		assert.Equal(t, "on", setting(false))
	}
}
