package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
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

func newCall(ctx context.Context, reqs ...eventstore.AppendRequest) *call {
	return &call{ctx: ctx, reqs: reqs, size: payload(reqs), reply: make(chan callResult, 1)}
}

func one(stream string, expected int64, evs ...eventstore.EventData) eventstore.AppendRequest {
	if len(evs) == 0 {
		evs = []eventstore.EventData{event()}
	}
	return eventstore.AppendRequest{Stream: stream, Expected: expected, Events: evs}
}

// seed appends each request alone.
func seed(t *testing.T, s *Store, reqs ...eventstore.AppendRequest) {
	t.Helper()
	for _, r := range reqs {
		_, err := s.Append(t.Context(), r)
		require.NoError(t, err)
	}
}

// withRetried opens a store whose stream "retried" holds one event, first,
// written by the append whose result is earlier, and seeds it with reqs.
func withRetried(t *testing.T, reqs ...eventstore.AppendRequest) (s *Store, first eventstore.EventData, earlier eventstore.AppendResult) {
	t.Helper()
	s = internalStore(t, 4)
	first = event()
	earlier, err := s.Append(t.Context(), one("retried", eventstore.NoStream, first))
	require.NoError(t, err)
	seed(t, s, reqs...)
	return s, first, earlier
}

// One statement carries several appends; each succeeds or fails on its own.
func TestGroupFailsEachAppendAlone(t *testing.T) {
	t.Parallel()
	s, first, earlier := withRetried(t, one("taken", eventstore.NoStream))
	ctx := t.Context()

	pair := []eventstore.EventData{event(), event()}
	calls := []*call{
		newCall(ctx, one("fresh", eventstore.NoStream)),
		newCall(ctx, one("taken", eventstore.NoStream)),                      // wrong version
		newCall(ctx, one("retried", eventstore.Any, first)),                  // the id is in the log
		newCall(ctx, one("fresh", eventstore.NoStream)),                      // the first call created it
		newCall(ctx, one("fresh", 0, pair...), one("other", eventstore.Any)), // sees the first call's version
		newCall(ctx, one("taken", 0), one("taken", 2)),                       // its second request is off by one
	}
	s.runGroup(s.groupCtx, calls)
	got := make([]callResult, len(calls))
	for i, c := range calls {
		got[i] = <-c.reply
	}

	require.NoError(t, got[0].err)
	assert.Equal(t, []int64{0}, got[0].res.Versions)
	assert.ErrorIs(t, got[1].err, eventstore.ErrWrongVersion)
	assert.ErrorIs(t, got[2].err, errIDTaken)
	assert.ErrorIs(t, got[3].err, eventstore.ErrWrongVersion)
	require.NoError(t, got[4].err)
	assert.Equal(t, []int64{2, 0}, got[4].res.Versions)
	assert.ErrorIs(t, got[5].err, eventstore.ErrWrongVersion)
	assert.Contains(t, got[5].err.Error(), "expected version 2, the stream is at 1")

	// Nothing of the failed calls was written; the others were, in one
	// transaction, in call order.
	for stream, want := range map[string]int{"fresh": 3, "other": 1, "taken": 1, "retried": 1} {
		evs, err := s.ReadStream(ctx, stream, 0)
		require.NoError(t, err)
		assert.Len(t, evs, want, stream)
	}
	assert.Equal(t, got[0].res.Position.Commit, got[4].res.Position.Commit, "one transaction")
	assert.True(t, got[0].res.Position.Less(got[4].res.Position))
	assert.True(t, earlier.Position.Less(got[0].res.Position))

	// Through Append, the reused id is recognised as a retry, whether the
	// version guard or the id gave it away.
	for _, expected := range []int64{eventstore.NoStream, eventstore.Any} {
		again, err := s.Append(ctx, one("retried", expected, first))
		require.NoError(t, err)
		assert.Equal(t, earlier, again)
	}
}

// A group that names each stream once is written by the set-based
// statement: every kind of expected version, several events, several
// streams in one append, all in one transaction in the group's order.
func TestSetGroupWritesEveryKindOfAppend(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	ctx := t.Context()
	seed(t, s, one("exact", eventstore.NoStream), one("any-old", eventstore.NoStream))
	declined, setGroups := s.declined.Load(), s.setGroups.Load()

	pair := []eventstore.EventData{event(), event()}
	calls := []*call{
		newCall(ctx, one("new", eventstore.NoStream, pair...)),
		newCall(ctx, one("exact", 0)),
		newCall(ctx, one("any-old", eventstore.Any), one("any-new", eventstore.Any, event(), event())),
	}
	require.NotNil(t, buildSetArgs(calls))
	s.runGroup(s.groupCtx, calls)
	got := make([]callResult, len(calls))
	for i, c := range calls {
		got[i] = <-c.reply
		require.NoError(t, got[i].err, "call %d", i)
	}
	assert.Equal(t, declined, s.declined.Load(), "the set-based statement did not decline")
	assert.Equal(t, setGroups+1, s.setGroups.Load(), "the set-based statement wrote the group")
	assert.Equal(t, []int64{1}, got[0].res.Versions)
	assert.Equal(t, []int64{1}, got[1].res.Versions)
	assert.Equal(t, []int64{1, 1}, got[2].res.Versions)

	evs, err := s.ReadAll(ctx, eventstore.Position{}, 100)
	require.NoError(t, err)
	evs = evs[2:] // the two set-up appends
	require.Len(t, evs, 6)
	want := []struct {
		stream  string
		version int64
	}{{"new", 0}, {"new", 1}, {"exact", 1}, {"any-old", 1}, {"any-new", 0}, {"any-new", 1}}
	for i, w := range want {
		assert.Equal(t, w.stream, evs[i].Stream, "event %d", i)
		assert.Equal(t, w.version, evs[i].Version, "event %d", i)
		assert.Equal(t, got[0].res.Position.Commit, evs[i].Position.Commit, "one transaction")
	}
	assert.Equal(t, pair[1].ID, evs[1].ID)
	assert.Equal(t, evs[1].Position, got[0].res.Position, "an append's position is its last event's")
	assert.Equal(t, evs[2].Position, got[1].res.Position)
	assert.Equal(t, evs[5].Position, got[2].res.Position)
}

// When a check of the set-based statement fails, nothing of it is written
// and the group is sent again call by call: each append at fault fails
// alone, with the reason it has, and the others are written. A group of
// one-event appends (appendEach) answers a wrong version itself, without
// declining: only a reused id sends it through evident_append.
func TestSetGroupDeclinesAndFailsEachAppendAlone(t *testing.T) {
	t.Parallel()
	s, first, earlier := withRetried(t, one("taken", eventstore.NoStream), one("moved", eventstore.NoStream, event(), event()))
	ctx := t.Context()

	for _, bad := range []struct {
		name  string
		req   eventstore.AppendRequest
		match string
		want  error
	}{
		{"no stream, but it exists", one("taken", eventstore.NoStream), "expected no stream, the stream exists", eventstore.ErrWrongVersion},
		{"exact, but no stream", one("missing", 0), "expected version 0, the stream is at no stream", eventstore.ErrWrongVersion},
		{"exact, but it moved on", one("moved", 0), "expected version 0, the stream is at 1", eventstore.ErrWrongVersion},
		{"an id in the log", one("elsewhere", eventstore.Any, first), "", errIDTaken},
	} {
		for _, events := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s, %d events", bad.name, events), func(t *testing.T) {
				req := bad.req
				if events == 2 {
					req.Events = append(slices.Clone(req.Events), event())
				}
				declined := s.declined.Load()
				good := "fresh-" + uuid.NewString()
				calls := []*call{newCall(ctx, one(good, eventstore.NoStream)), newCall(ctx, req)}
				require.NotNil(t, buildSetArgs(calls))
				each := eachOK(calls)
				assert.Equal(t, events == 1 && req.Expected != eventstore.Any, each, "written by appendEach")
				s.runGroup(s.groupCtx, calls)
				ok, failed := <-calls[0].reply, <-calls[1].reply
				if each && bad.want != errIDTaken {
					assert.Equal(t, declined, s.declined.Load(), "appendEach answered the wrong version itself")
				} else {
					assert.Equal(t, declined+1, s.declined.Load(), "the set-based statement declined")
				}
				require.NoError(t, ok.err)
				assert.Equal(t, []int64{0}, ok.res.Versions)
				require.ErrorIs(t, failed.err, bad.want)
				assert.Contains(t, failed.err.Error(), bad.match)
				evs, err := s.ReadStream(ctx, req.Stream, 0)
				require.NoError(t, err)
				for _, e := range evs {
					for _, mine := range req.Events {
						assert.NotEqual(t, mine.ID, e.ID, "nothing of the failed append is written")
					}
				}
			})
		}
	}

	// Through Append, the reused id is still recognised as a retry.
	again, err := s.Append(ctx, one("retried", eventstore.Any, first))
	require.NoError(t, err)
	assert.Equal(t, earlier, again)
}

// When the statement fails as a whole, every append of the group is tried
// again alone: the one at fault fails, its neighbours are written.
func TestGroupStatementFailureRetriesEachAlone(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	ctx := t.Context()
	bad := event()
	bad.Type = "" // Append refuses it; sent anyway, it breaks the whole statement
	calls := []*call{
		newCall(ctx, one("before", eventstore.NoStream)),
		newCall(ctx, one("bad", eventstore.NoStream, bad)),
		newCall(ctx, one("after", eventstore.NoStream)),
	}
	s.runGroup(s.groupCtx, calls)
	require.NoError(t, (<-calls[0].reply).err)
	assert.Error(t, (<-calls[1].reply).err)
	require.NoError(t, (<-calls[2].reply).err)
	for stream, want := range map[string]int{"before": 1, "bad": 0, "after": 1} {
		evs, err := s.ReadStream(ctx, stream, 0)
		require.NoError(t, err)
		assert.Len(t, evs, want, stream)
	}
}

// Concurrent appends share statements, and optimistic concurrency holds:
// writers racing on a few streams with the versions they believe leave
// every stream with versions 0…n exactly once, and every success reported
// is in the log at the version reported.
func TestConcurrentAppendsAreGrouped(t *testing.T) {
	t.Parallel()
	const writers, appends, streams = 32, 40, 8
	s := internalStore(t, writers+4)
	ctx := t.Context()

	type success struct {
		stream  string
		version int64
		id      uuid.UUID
	}
	var (
		mu        sync.Mutex
		successes []success
		conflicts int
		wg        sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := range appends {
				stream := fmt.Sprintf("s%d", (w+i)%streams)
				evs, err := s.ReadStream(ctx, stream, 0)
				if !assert.NoError(t, err) {
					return
				}
				ev := event()
				res, err := s.Append(ctx, one(stream, int64(len(evs))-1, ev))
				mu.Lock()
				switch {
				case err == nil:
					successes = append(successes, success{stream, res.Versions[0], ev.ID})
				case errors.Is(err, eventstore.ErrWrongVersion):
					conflicts++
				default:
					t.Error(err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()

	byID := map[uuid.UUID]eventstore.RecordedEvent{}
	for i := range streams {
		evs, err := s.ReadStream(ctx, fmt.Sprintf("s%d", i), 0)
		require.NoError(t, err)
		for v, e := range evs {
			require.Equal(t, int64(v), e.Version, "versions 0…n, each once")
			byID[e.ID] = e
		}
	}
	require.Len(t, byID, len(successes), "every success is in the log, nothing else is")
	for _, ok := range successes {
		e := byID[ok.id]
		assert.Equal(t, ok.stream, e.Stream)
		assert.Equal(t, ok.version, e.Version)
	}
	groups, grouped := s.groups.Load(), s.grouped.Load()
	t.Logf("%d appends (%d conflicts) in %d statements", grouped, conflicts, groups)
	assert.Equal(t, int64(writers*appends), grouped)
	assert.Less(t, groups, grouped, "concurrent appends shared statements")
}

// A caller that gives up while its append is still queued withdraws it:
// nothing is written.
func TestWithdrawnWhileQueued(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	s.qmu.Lock()
	s.committers = maxCommitters // no committer will start: the call stays queued
	s.qmu.Unlock()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, one("withdrawn", eventstore.NoStream))
		done <- err
	}()
	require.Eventually(t, func() bool {
		s.qmu.Lock()
		defer s.qmu.Unlock()
		return len(s.queue) == 1
	}, 5*time.Second, time.Millisecond)
	cancel()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "nothing written")

	s.qmu.Lock()
	assert.Empty(t, s.queue)
	s.committers = 0
	s.qmu.Unlock()
	evs, err := s.ReadStream(t.Context(), "withdrawn", 0)
	require.NoError(t, err)
	assert.Empty(t, evs)
}

// Two processes' groups naming the same streams in opposite call order do
// not deadlock: a group takes its streams' locks in key order first.
// Two other transactions hold a stream between each group's two calls, so
// that without that both groups would hold their first stream while waiting
// for the other's.
func TestOppositeGroupsDoNotDeadlock(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	a, b := storeAt(t, url, 4), storeAt(t, url, 4)
	ctx := t.Context()
	for _, stream := range []string{"w1", "w2", "x", "y"} {
		_, err := a.Append(ctx, one(stream, eventstore.NoStream))
		require.NoError(t, err)
	}
	hold := func(stream string) pgx.Tx {
		tx, err := a.pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 1))`, stream)
		require.NoError(t, err)
		return tx
	}
	h1, h2 := hold("w1"), hold("w2")
	ga := []*call{newCall(ctx, one("x", eventstore.Any)), newCall(ctx, one("w1", eventstore.Any)), newCall(ctx, one("y", eventstore.Any))}
	gb := []*call{newCall(ctx, one("y", eventstore.Any)), newCall(ctx, one("w2", eventstore.Any)), newCall(ctx, one("x", eventstore.Any))}
	var wg sync.WaitGroup
	wg.Go(func() { a.runGroup(a.groupCtx, ga) })
	wg.Go(func() { b.runGroup(b.groupCtx, gb) })
	time.Sleep(200 * time.Millisecond) // both groups are waiting on w1 and w2
	require.NoError(t, h1.Commit(ctx))
	require.NoError(t, h2.Commit(ctx))
	wg.Wait()
	for _, c := range append(ga, gb...) {
		require.NoError(t, (<-c.reply).err)
	}
	assert.Zero(t, a.fallbacks.Load()+b.fallbacks.Load(), "no group failed as a whole (deadlock)")
	for _, stream := range []string{"x", "y"} {
		evs, err := a.ReadStream(ctx, stream, 0)
		require.NoError(t, err)
		assert.Len(t, evs, 3)
	}
}

// A transaction that writes elsewhere on the server, however long it runs,
// does not hold readers of the log back, even when it has read the log
// too: only appends can still add events below a position already read.
func TestOtherWritersDoNotHoldReadersBack(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	ctx := t.Context()
	other, err := s.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = other.Rollback(context.WithoutCancel(ctx)) }()
	_, err = other.Exec(ctx, `CREATE TEMP TABLE unrelated (n int); INSERT INTO unrelated VALUES (1); SELECT count(*) FROM events`)
	require.NoError(t, err)
	var xid int64
	require.NoError(t, other.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid))

	res, err := s.Append(ctx, one("after-other", eventstore.NoStream))
	require.NoError(t, err)
	require.Greater(t, int64(res.Position.Commit), xid, "the append began after the other writer")

	start := time.Now()
	evs, err := s.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	require.Len(t, evs, 1, "the append is readable while the other writer runs")
	assert.Less(t, time.Since(start), holdBackWait/2, "read without waiting for the other writer")
	require.NoError(t, s.Wait(ctx, eventstore.Position{}), "Wait sees it too")
}

// An append still running holds back every event after its own id, even
// one committed already: reading past it would skip its events.
func TestRunningAppendHoldsReadersBack(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	slow, fast := storeAt(t, url, 4), storeAt(t, url, 4)
	ctx := t.Context()
	inTx, release := make(chan struct{}), make(chan struct{})
	slow.beforeCommit = func(context.Context) {
		close(inTx)
		<-release
	}
	first := make(chan eventstore.AppendResult, 1)
	go func() {
		res, err := slow.Append(ctx, one("slow", eventstore.NoStream))
		assert.NoError(t, err)
		first <- res
	}()
	<-inTx
	second, err := fast.Append(ctx, one("fast", eventstore.NoStream))
	require.NoError(t, err)

	evs, err := fast.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	assert.Empty(t, evs, "the committed append waits behind the running one")

	close(release)
	earlier := <-first
	require.True(t, earlier.Position.Less(second.Position), "the running append sorts first")
	evs, err = fast.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, "slow", evs[0].Stream)
	assert.Equal(t, "fast", evs[1].Stream)
}

// An append after Close is refused as the store being unavailable, as on
// SQLite, so that a command caught by shutdown answers 503, not 500.
func TestAppendAfterCloseIsUnavailable(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	require.NoError(t, s.Close())
	_, err := s.Append(t.Context(), one("late", eventstore.NoStream))
	require.ErrorIs(t, err, eventstore.ErrUnavailable)
}

// A stream of commits is announced by at most one NOTIFY per notifyEvery,
// not one per commit: each NOTIFY is a transaction of its own.
func TestNotifiesArePaced(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	_, err := s.Append(t.Context(), one("paced", eventstore.NoStream)) // starts the notifier
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.notifies.Load() == 1 }, time.Second, time.Millisecond)

	// A commit every 50 µs or so for 50 ms.
	start := time.Now()
	for time.Since(start) < 50*time.Millisecond {
		s.committed()
		time.Sleep(50 * time.Microsecond)
	}
	elapsed := time.Since(start)
	time.Sleep(2 * notifyEvery) // the last commits' NOTIFY
	sent := s.notifies.Load() - 1
	t.Logf("commits for %s: %d NOTIFYs", elapsed, sent)
	assert.LessOrEqual(t, sent, int64(elapsed/notifyEvery)+2)
	assert.Positive(t, sent, "the commits were announced")
}

// Groups naming thousands of streams take no advisory locks: each would
// take a slot of the server's shared lock table (64 per connection by
// default), and twice MaxAppendEvents of them would exhaust it. Both the
// set-based statement and evident_append write such groups.
func TestGroupsOfManyStreamsFitTheLockTable(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	ctx := t.Context()
	many := func(prefix string, n int) []eventstore.AppendRequest {
		reqs := make([]eventstore.AppendRequest, n)
		for i := range reqs {
			reqs[i] = one(fmt.Sprintf("%s-%d", prefix, i), eventstore.NoStream)
		}
		return reqs
	}
	for name, second := range map[string][]eventstore.AppendRequest{
		"set-based":      many("set-b", MaxAppendEvents),
		"evident_append": append(many("fn-b", MaxAppendEvents-1), one("fn-a-0", eventstore.Any)), // names a stream twice
	} {
		prefix := map[string]string{"set-based": "set-a", "evident_append": "fn-a"}[name]
		calls := []*call{newCall(ctx, many(prefix, MaxAppendEvents)...), newCall(ctx, second...)}
		s.runGroup(s.groupCtx, calls)
		for i, c := range calls {
			require.NoError(t, (<-c.reply).err, "%s: call %d", name, i)
		}
	}
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4*MaxAppendEvents), n)
}

// A caller that finds a committer slot free runs its group itself, on its
// own goroutine: no hand-off to a committer goroutine and back.
func TestLoneAppendRunsOnItsCaller(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	var stack []byte
	s.beforeCommit = func(context.Context) {
		buf := make([]byte, 64<<10)
		stack = buf[:runtime.Stack(buf, false)]
	}
	_, err := s.Append(t.Context(), one("lone", eventstore.NoStream))
	require.NoError(t, err)
	assert.Contains(t, string(stack), ".TestLoneAppendRunsOnItsCaller(", "the statement ran on the caller's goroutine")
}

// A caller running its group of one alone runs it under its own ctx: when
// it gives up, the statement is cancelled and the caller is told the
// outcome is unknown, rather than held until the statement ends.
func TestLoneLeaderGivesUp(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	entered, cancelled := make(chan struct{}), make(chan bool, 1)
	s.beforeCommit = func(ctx context.Context) {
		close(entered)
		select {
		case <-ctx.Done():
			cancelled <- true
		case <-time.After(10 * time.Second): // not the caller's ctx: it would never end
			cancelled <- false
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, one("given-up", eventstore.NoStream))
		done <- err
	}()
	<-entered
	cancel()
	require.True(t, <-cancelled, "the statement ran under the caller's ctx")
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "outcome unknown")

	evs, err := s.ReadStream(t.Context(), "given-up", 0)
	require.NoError(t, err)
	assert.Empty(t, evs, "cancelled before COMMIT: nothing written")
}

// retryLookups counts the statements with which Append looks for an
// earlier write of a failed append.
type retryLookups struct{ n atomic.Int64 }

func (r *retryLookups) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if strings.Contains(data.SQL, "WHERE event_id = ANY") {
		r.n.Add(1)
	}
	return ctx
}

func (r *retryLookups) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// An append of one event that fails on its expected version costs one
// read after its statement, which says where the stream is and that the
// append is no retry: Append does not look again. A retry of an append
// already written is still answered with the earlier result.
func TestWrongVersionLooksOnce(t *testing.T) {
	t.Parallel()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	cfg.MaxConns = 4
	lookups := &retryLookups{}
	cfg.ConnConfig.Tracer = lookups
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := New(context.Background(), pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()

	first := one("looked", eventstore.NoStream)
	earlier, err := s.Append(ctx, first)
	require.NoError(t, err)

	_, err = s.Append(ctx, one("looked", eventstore.NoStream))
	require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	assert.Contains(t, err.Error(), "expected no stream, the stream exists")
	_, err = s.Append(ctx, one("looked", 3))
	require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	assert.Contains(t, err.Error(), "expected version 3, the stream is at 0")
	assert.Zero(t, lookups.n.Load(), "no second look for an earlier write")

	again, err := s.Append(ctx, first)
	require.NoError(t, err, "a retry of a written append")
	assert.Equal(t, earlier, again)
}

// A call naming a stream that an earlier call of the group names waits for
// the next group, so that groups stay set-based; the calls left keep their
// order. It waits once: writers contending for one stream then share a
// group (through evident_append) instead of taking one round trip each.
func TestGroupNamesEachStreamOnce(t *testing.T) {
	t.Parallel()
	s := internalStore(t, 4)
	a, b, c := newCall(t.Context(), one("s", 0)), newCall(t.Context(), one("s", 0)), newCall(t.Context(), one("t", 0))
	d := newCall(t.Context(), one("u", 0), one("t", 0))
	e, f := newCall(t.Context(), one("s", 1)), newCall(t.Context(), one("v", 0))
	s.qmu.Lock()
	s.queue = []*call{a, b, c, d, e, f}
	s.committers++
	s.commitWG.Add(1)
	s.qmu.Unlock()

	assert.Equal(t, []*call{a, c, f}, s.next())
	// e was left once already: it joins b's group, naming s twice.
	assert.Equal(t, []*call{b, d, e}, s.next())
	assert.Nil(t, s.next())
	s.qmu.Lock()
	defer s.qmu.Unlock()
	assert.Empty(t, s.queue)
	assert.Zero(t, s.committers)
}
