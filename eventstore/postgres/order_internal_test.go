package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
)

const (
	orderWriters = 16
	orderAppends = 200
)

func internalStore(t testing.TB, maxConns int32) *Store {
	t.Helper()
	return storeAt(t, pgtest.URL(t), maxConns)
}

// storeAt opens a Store with a pool of its own on url's schema, as another
// process would.
func storeAt(t testing.TB, url string, maxConns int32) *Store {
	t.Helper()
	return storeWith(t, url, maxConns, nil)
}

// storeWith is storeAt with tr, when not nil, tracing the pool's statements.
func storeWith(t testing.TB, url string, maxConns int32, tr pgx.QueryTracer) *Store {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = maxConns
	if tr != nil {
		cfg.ConnConfig.Tracer = tr
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := New(context.Background(), pool)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// slowCommits delays every append 0–20 ms between its inserts and its
// COMMIT, so that transactions commit in a different order from the one in
// which they took their seq values.
func slowCommits(ctx context.Context) {
	t := time.NewTimer(time.Duration(rand.IntN(20_000)) * time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

type orderRun struct {
	written map[uuid.UUID]bool // every event appended
	pairs   map[uuid.UUID]uuid.UUID
	read    []eventstore.RecordedEvent
}

// runOrderLoad runs orderWriters writers of orderAppends appends each (every
// seventh append carries two events) while one subscriber reads the log from
// the start as the projections do. The subscriber stops once the writers
// are done and the log, read to its end, has nothing more.
func runOrderLoad(t *testing.T, s *Store, idle func(ctx context.Context, after eventstore.Position) error) orderRun {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	run := orderRun{written: map[uuid.UUID]bool{}, pairs: map[uuid.UUID]uuid.UUID{}}
	var mu sync.Mutex
	var writersDone atomic.Bool
	readErr := make(chan error, 1)
	go func() {
		var after eventstore.Position
		for {
			evs, err := s.ReadAll(ctx, after, 100)
			if err != nil {
				readErr <- err
				return
			}
			run.read = append(run.read, evs...)
			if len(evs) > 0 {
				after = evs[len(evs)-1].Position
				continue
			}
			if writersDone.Load() {
				// One more read after the writers ended, so nothing that
				// committed before they did is missed by this loop itself.
				evs, err := s.ReadAll(ctx, after, 100)
				if err == nil && len(evs) == 0 {
					readErr <- nil
					return
				}
				if err != nil {
					readErr <- err
					return
				}
				run.read = append(run.read, evs...)
				after = evs[len(evs)-1].Position
				continue
			}
			if err := idle(ctx, after); err != nil {
				readErr <- err
				return
			}
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, orderWriters)
	for w := range orderWriters {
		stream := fmt.Sprintf("order-%d-%s", w, uuid.NewString())
		wg.Go(func() {
			version := eventstore.NoStream
			for i := range orderAppends {
				evs := []eventstore.EventData{event()}
				if i%7 == 0 {
					evs = append(evs, event())
				}
				res, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: version, Events: evs})
				if err != nil {
					errs <- err
					return
				}
				version = res.Versions[0]
				mu.Lock()
				for _, e := range evs {
					run.written[e.ID] = true
				}
				if len(evs) == 2 {
					run.pairs[evs[0].ID] = evs[1].ID
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	writersDone.Store(true)
	require.NoError(t, <-readErr)
	return run
}

func event() eventstore.EventData {
	return eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "test.ordered", Data: json.RawMessage(`{}`), Metadata: json.RawMessage(`{}`)}
}

// TestLiveReaderNeverSkips is the proof of the (tx, seq) design: under
// concurrent appends whose commits are delayed at random, a live subscriber
// sees every event exactly once, in strictly increasing position order, and
// each append's events next to each other.
func TestLiveReaderNeverSkips(t *testing.T) {
	t.Parallel()
	s := internalStore(t, orderWriters+4)
	s.beforeCommit = slowCommits

	run := runOrderLoad(t, s, s.Wait)

	seen := make(map[uuid.UUID]int, len(run.read))
	for i, e := range run.read {
		seen[e.ID]++
		if i > 0 {
			require.True(t, run.read[i-1].Position.Less(e.Position),
				"event %d at %s read after %s", i, e.Position, run.read[i-1].Position)
		}
		if second, ok := run.pairs[e.ID]; ok {
			require.Less(t, i+1, len(run.read))
			assert.Equal(t, second, run.read[i+1].ID, "one append's events are contiguous in the log")
		}
	}
	var missing int
	for id := range run.written {
		if seen[id] == 0 {
			missing++
		}
	}
	for id, n := range seen {
		assert.Equal(t, 1, n, "event %s read %d times", id, n)
		assert.True(t, run.written[id], "event %s read but never written", id)
	}
	assert.Zero(t, missing, "events the live reader never saw")
	assert.Len(t, run.read, len(run.written))
	assert.Positive(t, s.setGroups.Load(), "the load went through the set-based statement too")
	t.Logf("%d events from %d appends read live, in order, none skipped (%d statements, %d set-based)",
		len(run.read), orderWriters*orderAppends, s.groups.Load(), s.setGroups.Load())
}

// TestNaiveReaderSkips runs the same load against the reader the design
// replaces ("seq > N"), to show that the load does provoke out-of-order
// commits: that reader loses events for good.
func TestNaiveReaderSkips(t *testing.T) {
	t.Parallel()
	s := internalStore(t, orderWriters+4)
	s.beforeCommit = slowCommits
	s.naive = true

	run := runOrderLoad(t, s, func(ctx context.Context, _ eventstore.Position) error {
		select {
		case <-time.After(2 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})

	seen := make(map[uuid.UUID]bool, len(run.read))
	for _, e := range run.read {
		seen[e.ID] = true
	}
	var missing int
	for id := range run.written {
		if !seen[id] {
			missing++
		}
	}
	t.Logf("the naive reader missed %d of %d events", missing, len(run.written))
	assert.Positive(t, missing, "a seq > N reader skips commits that land out of order")
}

// BenchmarkAppendEightWriters measures single-event appends from eight
// goroutines, each on its own stream, with notification and version checks
// as in production.
func BenchmarkAppendEightWriters(b *testing.B) {
	s := internalStore(b, 16)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(max(1, 8/testingProcs()))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		stream := fmt.Sprintf("bench-%d-%s", next.Add(1), uuid.NewString())
		version := eventstore.NoStream
		for pb.Next() {
			res, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: version, Events: []eventstore.EventData{event()}})
			if err != nil {
				b.Error(err)
				return
			}
			version = res.Versions[0]
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
}

func testingProcs() int { return runtime.GOMAXPROCS(0) }
