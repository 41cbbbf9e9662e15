package postgres

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
)

// tripCount counts what a pool sends: statements on their own, and
// batches; not the notifier's NOTIFYs, which follow commits.
type tripCount struct {
	mu         sync.Mutex
	statements []string
	batches    int
}

func (c *tripCount) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(d.SQL, "pg_notify") {
		c.mu.Lock()
		c.statements = append(c.statements, d.SQL)
		c.mu.Unlock()
	}
	return ctx
}
func (*tripCount) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *tripCount) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.mu.Lock()
	c.batches++
	c.mu.Unlock()
	return ctx
}
func (*tripCount) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*tripCount) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (c *tripCount) take() (statements []string, batches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	statements, batches = c.statements, c.batches
	c.statements, c.batches = nil, 0
	return statements, batches
}

// tracedAt is storeAt with a tracer on the pool.
func tracedAt(t testing.TB, url string, tr pgx.QueryTracer) *Store {
	t.Helper()
	return storeWith(t, url, 4, tr)
}

// listening starts s's listener and waits until it is connected.
func listening(t *testing.T, s *Store) {
	t.Helper()
	s.subscribe()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.heard
	}, 5*time.Second, time.Millisecond)
}

// A reader at the head asks the server once: the read is one statement,
// with no look at the lock table when it finds nothing held back, and
// once it has found everything there was, neither a read from the same
// position nor a Wait's look asks again until a commit, of this process or
// another, wakes the readers.
func TestReadsAtTheHead(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	tr := &tripCount{}
	s := tracedAt(t, url, tr)
	other := storeAt(t, url, 4)
	ctx := t.Context()
	listening(t, s)

	first, err := s.Append(ctx, one("head-a", eventstore.NoStream))
	require.NoError(t, err)
	evs, err := s.ReadAll(ctx, eventstore.Position{}, 100)
	require.NoError(t, err)
	require.Len(t, evs, 1)

	s.wake() // forget what the read found
	tr.take()
	evs, err = s.ReadAll(ctx, first.Position, 100)
	require.NoError(t, err)
	assert.Empty(t, evs)
	statements, batches := tr.take()
	assert.Len(t, statements, 1, "a read at the head")
	assert.Zero(t, batches, "a read at the head")

	evs, err = s.ReadAll(ctx, first.Position, 100)
	require.NoError(t, err)
	assert.Empty(t, evs)
	waited := make(chan error, 1)
	go func() { waited <- s.Wait(ctx, first.Position) }()
	time.Sleep(20 * time.Millisecond) // let Wait take its look, if it takes one
	statements, batches = tr.take()
	assert.Empty(t, statements, "a read and a Wait after everything there was")
	assert.Zero(t, batches, "a read and a Wait after everything there was")

	second, err := other.Append(ctx, one("head-b", eventstore.NoStream))
	require.NoError(t, err)
	require.NoError(t, <-waited)
	require.Eventually(t, func() bool {
		evs, err := s.ReadAll(ctx, first.Position, 100)
		require.NoError(t, err)
		return len(evs) == 1 && evs[0].Position == second.Position
	}, 5*time.Second, time.Millisecond, "another process's append is read")

	third, err := s.Append(ctx, one("head-c", eventstore.NoStream))
	require.NoError(t, err)
	evs, err = s.ReadAll(ctx, second.Position, 100)
	require.NoError(t, err)
	require.Len(t, evs, 1, "this process's append is read at once")
	assert.Equal(t, third.Position, evs[0].Position)
}

// The same proof as TestLiveReaderNeverSkips, with transactions that are
// no appends running beside it (each takes a transaction id and keeps it a
// while), so that reads keep finding the snapshot's horizon below events
// they would return, and fall back to asking which transactions append.
func TestLiveReaderNeverSkipsBesideOtherTransactions(t *testing.T) {
	t.Parallel()
	s := internalStore(t, orderWriters+6)
	s.beforeCommit = slowCommits
	ctx, cancel := context.WithCancel(t.Context())
	var others sync.WaitGroup
	for range 2 {
		others.Go(func() {
			for ctx.Err() == nil {
				tx, err := s.pool.Begin(ctx)
				if err != nil {
					return
				}
				_, _ = tx.Exec(ctx, `SELECT pg_current_xact_id(), pg_sleep($1)`, rand.Float64()/100)
				_ = tx.Rollback(context.Background())
			}
		})
	}
	run := runOrderLoad(t, s, s.Wait)
	cancel()
	others.Wait()

	seen := make(map[uuid.UUID]int, len(run.read))
	for i, e := range run.read {
		seen[e.ID]++
		if i > 0 {
			require.True(t, run.read[i-1].Position.Less(e.Position),
				"event %d at %s read after %s", i, e.Position, run.read[i-1].Position)
		}
	}
	for id := range run.written {
		assert.Equal(t, 1, seen[id], "event %s read %d times", id, seen[id])
	}
	assert.Len(t, run.read, len(run.written))
}
