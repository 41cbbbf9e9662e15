package projections_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"modernc.org/sqlite"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"
)

// flaky wraps a projection and fails the events fail says to fail.
type flaky struct {
	projections.Projection
	fail  func(ev eventstore.RecordedEvent) error
	calls atomic.Int64
}

func (f *flaky) Tables() []string { return f.Projection.(projections.Tabled).Tables() }

func (f *flaky) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	f.calls.Add(1)
	if err := f.fail(ev); err != nil {
		return err
	}
	return f.Projection.Apply(tx, ev)
}

func auditCount(t *testing.T, e *env) int {
	t.Helper()
	return len(e.dump(t)["audit"])
}

func checkpoint(t *testing.T, e *env, name string) eventstore.Position {
	t.Helper()
	cp, err := e.rm.Checkpoint(context.Background(), name)
	require.NoError(t, err)
	return cp
}

func TestFirstEventIsProjected(t *testing.T) { eachDialect(t, testFirstEventIsProjected) }

func testFirstEventIsProjected(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	r, _ := e.start(t, projections.All(), fast(5))
	id := uuid.New()
	pos := e.append(t, userStream(id), user.Created{UserID: id, Email: "first@example.org", Name: "First"})
	require.Equal(t, eventstore.At(1), pos, "the first event of the log")
	waitFor(t, r, pos)

	_, err := e.rm.User(ctx, id)
	require.NoError(t, err)
	p, err := e.rm.Audit(ctx, readmodels.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, p.Items, 1)
	assert.Equal(t, eventstore.At(1), p.Items[0].Position)
	for _, s := range r.Status() {
		assert.Equal(t, eventstore.At(1), s.Position, s.Name)
		assert.True(t, s.Running, s.Name)
		assert.Empty(t, s.LastError, s.Name)
	}
}

func TestWaitForWakesAndTimesOut(t *testing.T) { eachDialect(t, testWaitForWakesAndTimesOut) }

func testWaitForWakesAndTimesOut(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	r, _ := e.start(t, projections.All(), fast(5))

	id := uuid.New()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- r.WaitFor(ctx, eventstore.At(1))
	}()
	e.register(t, id, "wake@example.org")
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("WaitFor did not wake")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, r.WaitFor(ctx, eventstore.At(1000)), context.DeadlineExceeded)
}

func TestFailingBatchMovesNeitherRowsNorCheckpoint(t *testing.T) {
	eachDialect(t, testFailingBatchMovesNeitherRowsNorCheckpoint)
}

func testFailingBatchMovesNeitherRowsNorCheckpoint(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	var ids []uuid.UUID
	for i := range 5 {
		id := uuid.New()
		ids = append(ids, id)
		e.append(t, userStream(id), user.Created{UserID: id, Email: fmt.Sprintf("b%d@x.org", i), Name: "B"})
	}
	var broken atomic.Bool
	broken.Store(true)
	f := &flaky{Projection: projections.Audit(), fail: func(ev eventstore.RecordedEvent) error {
		if broken.Load() && ev.Position == eventstore.At(4) {
			return errors.New("not today")
		}
		return nil
	}}
	r, _ := e.start(t, []projections.Projection{f}, fast(1_000_000))
	require.Eventually(t, func() bool { return f.calls.Load() > 20 }, 10*time.Second, time.Millisecond, "retried")

	assert.Equal(t, 0, auditCount(t, e), "events 1-3 of the failing batch are not committed")
	assert.True(t, checkpoint(t, e, "audit").IsZero())
	st := r.Status()[0]
	assert.Contains(t, st.LastError, "not today")
	assert.True(t, st.Position.IsZero())

	broken.Store(false)
	waitFor(t, r, eventstore.At(5))
	assert.Equal(t, 5, auditCount(t, e))
	assert.Equal(t, eventstore.At(5), checkpoint(t, e, "audit"))
	assert.Empty(t, r.Status()[0].LastError)
	parked, err := e.rm.Parked(context.Background())
	require.NoError(t, err)
	assert.Empty(t, parked)
}

func TestPoisonEventIsParkedAndLaterEventsApply(t *testing.T) {
	eachDialect(t, testPoisonEventIsParkedAndLaterEventsApply)
}

func testPoisonEventIsParkedAndLaterEventsApply(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	var poison eventstore.RecordedEvent
	for i := range 6 {
		id := uuid.New()
		e.append(t, userStream(id), user.Created{UserID: id, Email: fmt.Sprintf("p%d@x.org", i), Name: "P"})
	}
	poison = e.all(t)[2]
	f := &flaky{Projection: projections.Audit(), fail: func(ev eventstore.RecordedEvent) error {
		if ev.ID == poison.ID {
			return errors.New("cannot digest")
		}
		return nil
	}}
	r, _ := e.start(t, []projections.Projection{f, projections.Users()}, fast(3))
	waitFor(t, r, eventstore.At(6))

	assert.Equal(t, 5, auditCount(t, e), "every event but the poison one")
	assert.Equal(t, eventstore.At(6), checkpoint(t, e, "audit"))
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, "audit", parked[0].Projection)
	assert.Equal(t, poison.ID.String(), parked[0].EventID)
	assert.Equal(t, poison.Position, parked[0].Position)
	assert.Equal(t, "user.created", parked[0].EventType)
	assert.Equal(t, "cannot digest", parked[0].Error)
	assert.Equal(t, 4, parked[0].Attempts, "the first try and three retries")
	assert.Len(t, e.dump(t)["users"], 6, "other projections are not held back")

	st := r.Status()
	assert.Equal(t, 1, st[0].Parked)
	assert.Equal(t, 0, st[1].Parked)

	// Later events still apply.
	id := uuid.New()
	pos := e.append(t, userStream(id), user.Created{UserID: id, Email: "later@x.org", Name: "L"})
	waitFor(t, r, pos)
	assert.Equal(t, 6, auditCount(t, e))
}

func TestUnavailableDatabaseIsRetriedNotParked(t *testing.T) {
	eachDialect(t, testUnavailableDatabaseIsRetriedNotParked)
}

func testUnavailableDatabaseIsRetriedNotParked(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	id := uuid.New()
	pos := e.append(t, userStream(id), user.Created{UserID: id, Email: "u@x.org", Name: "U"})
	var outage atomic.Int64
	f := &flaky{Projection: projections.Audit(), fail: func(ev eventstore.RecordedEvent) error {
		if outage.Add(1) <= 20 { // far more than MaxRetries
			return fmt.Errorf("insert: %w", readmodels.ErrUnavailable)
		}
		return nil
	}}
	src := &flakySource{Source: e.es, failures: 5}
	r := projections.NewRunner(src, e.rm, []projections.Projection{f}, fast(2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	waitFor(t, r, pos)

	assert.Equal(t, 1, auditCount(t, e))
	parked, err := e.rm.Parked(context.Background())
	require.NoError(t, err)
	assert.Empty(t, parked)
	assert.GreaterOrEqual(t, src.calls.Load(), int64(6), "read failures were retried")
}

// flakySource fails its first reads as an unreachable store would.
type flakySource struct {
	projections.Source
	failures int64
	calls    atomic.Int64
}

func (s *flakySource) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if s.calls.Add(1) <= s.failures {
		return nil, fmt.Errorf("read: %w", eventstore.ErrUnavailable)
	}
	return s.Source.ReadAll(ctx, after, limit)
}

func TestResumeAfterRestartDoesNotDuplicate(t *testing.T) {
	eachDialect(t, testResumeAfterRestartDoesNotDuplicate)
}

func testResumeAfterRestartDoesNotDuplicate(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	last := e.workload(t, 4)
	r1, stop := e.start(t, projections.All(), fast(5))
	waitFor(t, r1, last)
	before := e.dump(t)
	stop()
	for _, s := range r1.Status() {
		assert.False(t, s.Running, s.Name)
	}

	id := uuid.New()
	e.register(t, id, "late@example.org")
	pos := e.append(t, userStream(id), user.Activated{UserID: id, ActivatedBy: "admin", Method: user.MethodAdmin})

	// Count what a second Runner applies: only the new events.
	f := &flaky{Projection: projections.Audit(), fail: func(eventstore.RecordedEvent) error { return nil }}
	r2, _ := e.start(t, []projections.Projection{projections.Users(), projections.Sessions(), projections.ActivationTokens(), f}, fast(5))
	waitFor(t, r2, pos)
	assert.Equal(t, int64(3), f.calls.Load(), "claim, created, activated: nothing earlier is applied again")

	after := e.dump(t)
	assert.Len(t, after["audit"], len(before["audit"])+2)
	u, err := e.rm.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "active", u.Status)
	for _, s := range r2.Status() {
		assert.Equal(t, pos, s.Position, s.Name)
	}
}

func TestRebuildEqualsLive(t *testing.T) { eachDialect(t, testRebuildEqualsLive) }

func testRebuildEqualsLive(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	opts := fast(5)
	opts.BatchSize = 7
	r, stop := e.start(t, projections.All(), opts)
	// Appends while the projections run, in several batches.
	e.workload(t, 6)
	last := e.workload(t, 6)
	waitFor(t, r, last)
	live := e.dump(t)
	stop()
	count, err := e.es.Count(ctx)
	require.NoError(t, err)

	require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, projections.All()))
	rebuilt := e.dump(t)
	assert.Equal(t, live, rebuilt)
	for _, tbl := range readmodels.ProjectionTables {
		assert.NotEmpty(t, rebuilt[tbl], tbl)
	}
	after, err := e.es.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, count, after, "a rebuild appends nothing")
	for _, p := range projections.All() {
		assert.Equal(t, last, checkpoint(t, e, p.Name()), p.Name())
	}

	// Deleted stays deleted after the rebuild.
	p, err := e.rm.Users(ctx, readmodels.UserFilter{Status: "deleted"})
	require.NoError(t, err)
	assert.Len(t, p.Items, 2, "one in each workload")
}

func TestRebuildOfOneProjectionLeavesOthers(t *testing.T) {
	eachDialect(t, testRebuildOfOneProjectionLeavesOthers)
}

func testRebuildOfOneProjectionLeavesOthers(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	last := e.workload(t, 3)
	require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, projections.All()))
	before := e.dump(t)
	require.NoError(t, e.rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint("users", eventstore.At(2)) // pretend users is behind
	}))
	require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, []projections.Projection{projections.Audit()}))
	assert.Equal(t, before, e.dump(t))
	assert.Equal(t, eventstore.At(2), checkpoint(t, e, "users"), "untouched")
	assert.Equal(t, last, checkpoint(t, e, "audit"))
}

// sessionWatcher is a reactor that follows the sessions projection and, on
// a user's creation, issues a command that appends to the log.
type sessionWatcher struct {
	e       *env
	t       *testing.T
	mu      sync.Mutex
	seen    []uuid.UUID // sessions found in the read model when handled
	missing []uuid.UUID
	created atomic.Int64
}

func (w *sessionWatcher) Name() string    { return "session-watcher" }
func (w *sessionWatcher) After() []string { return []string{"sessions"} }

func (w *sessionWatcher) Handle(ctx context.Context, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case session.TypeLoggedIn:
		e, err := session.Decode(ev.Type, 1, ev.Data)
		if err != nil {
			return err
		}
		in := e.(session.LoggedIn)
		ids, err := w.e.rm.OpenSessionIDs(ctx, in.UserID)
		if err != nil {
			return err
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, id := range ids {
			if id == in.SessionID {
				w.seen = append(w.seen, id)
				return nil
			}
		}
		w.missing = append(w.missing, in.SessionID)
	case user.TypeCreated:
		// Appending from a reactor must not deadlock on the one SQLite
		// write connection.
		e, err := user.Decode(ev.Type, 1, ev.Data)
		if err != nil {
			return err
		}
		id := e.(user.Created).UserID
		w.e.appendCtx(ctx, w.t, userStream(id), user.ActivationRequested{UserID: id, TokenHash: "auto-" + id.String(),
			ExpiresAt: t0.Add(time.Hour), RequestedBy: "system"})
		w.created.Add(1)
	}
	return nil
}

// slow delays a projection so that a reactor that did not wait would see
// nothing.
type slow struct{ projections.Projection }

func (s slow) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if ev.Type == session.TypeLoggedIn {
		time.Sleep(20 * time.Millisecond)
	}
	return s.Projection.Apply(tx, ev)
}

func TestReactorRunsAfterItsProjection(t *testing.T) {
	eachDialect(t, testReactorRunsAfterItsProjection)
}

func testReactorRunsAfterItsProjection(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	w := &sessionWatcher{e: e, t: t}
	opts := fast(5)
	opts.BatchSize = 2
	opts.Reactors = []projections.Reactor{w}
	r, _ := e.start(t, []projections.Projection{projections.Users(), slow{projections.Sessions()}, projections.ActivationTokens()}, opts)

	uid := uuid.New()
	e.register(t, uid, "react@example.org")
	var want []uuid.UUID
	for range 5 {
		sid, _ := e.login(t, uid, time.Now().Add(time.Hour))
		want = append(want, sid)
	}
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.seen)+len(w.missing) == 5
	}, 10*time.Second, 5*time.Millisecond)
	w.mu.Lock()
	assert.Equal(t, want, w.seen, "every session was in the read model when the reactor ran")
	assert.Empty(t, w.missing)
	w.mu.Unlock()

	// The event the reactor appended is projected too.
	require.Eventually(t, func() bool {
		p, err := e.rm.ActivationTokens(ctx, uid, "", 0)
		return err == nil && len(p.Items) == 1
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, int64(1), w.created.Load())

	var st projections.Status
	for _, s := range r.Status() {
		if s.Name == w.Name() {
			st = s
		}
	}
	assert.Equal(t, projections.KindReactor, st.Kind)
	require.Eventually(t, func() bool {
		return !checkpoint(t, e, w.Name()).IsZero()
	}, 10*time.Second, 5*time.Millisecond, "the reactor saves its checkpoint")
}

// failingReactor fails every time on one event type.
type failingReactor struct {
	handled atomic.Int64
}

func (*failingReactor) Name() string { return "failing" }

func (f *failingReactor) Handle(_ context.Context, ev eventstore.RecordedEvent) error {
	if ev.Type == user.TypeDeleted {
		return errors.New("will not")
	}
	f.handled.Add(1)
	return nil
}

func TestReactorPoisonIsParked(t *testing.T) { eachDialect(t, testReactorPoisonIsParked) }

func testReactorPoisonIsParked(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	id := uuid.New()
	e.append(t, userStream(id), user.Created{UserID: id, Email: "x@x.org", Name: "X"}, user.Deleted{UserID: id, DeletedBy: "admin"})
	last := e.append(t, "other", unknownEvent{})
	fr := &failingReactor{}
	opts := fast(2)
	opts.Reactors = []projections.Reactor{fr}
	e.start(t, nil, opts)
	require.Eventually(t, func() bool { return checkpoint(t, e, "failing") == last }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, int64(2), fr.handled.Load())
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, "failing", parked[0].Projection)
	assert.Equal(t, user.TypeDeleted, parked[0].EventType)
	assert.Equal(t, 3, parked[0].Attempts)
}

func TestRunRejectsMisconfiguration(t *testing.T) { eachDialect(t, testRunRejectsMisconfiguration) }

func testRunRejectsMisconfiguration(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	ctx := context.Background()
	err := projections.NewRunner(e.es, e.rm, []projections.Projection{projections.Users(), projections.Users()}, projections.Options{}).Run(ctx)
	assert.ErrorContains(t, err, "twice")

	w := &sessionWatcher{e: e, t: t}
	err = projections.NewRunner(e.es, e.rm, []projections.Projection{projections.Users()},
		projections.Options{Reactors: []projections.Reactor{w}}).Run(ctx)
	assert.ErrorContains(t, err, "sessions")
}

// countingSource is the real event store, counting the reads that returned
// events.
type countingSource struct {
	projections.Source
	reads atomic.Int64 // that returned events
	all   atomic.Int64
}

func (c *countingSource) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	evs, err := c.Source.ReadAll(ctx, after, limit)
	c.all.Add(1)
	if len(evs) > 0 {
		c.reads.Add(1)
	}
	return evs, err
}

// startWith runs a Runner on src instead of the event store itself.
func (e *env) startWith(t *testing.T, src projections.Source, ps []projections.Projection, opts projections.Options) *projections.Runner {
	t.Helper()
	r := projections.NewRunner(src, e.rm, ps, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return r
}

// Every worker at the head gets each batch from one read of the log, not
// one read per worker.
func TestWorkersShareTheirReadsOfTheLog(t *testing.T) {
	eachDialect(t, testWorkersShareTheirReadsOfTheLog)
}

func testWorkersShareTheirReadsOfTheLog(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	src := &countingSource{Source: e.es}
	var handled atomic.Int64
	opts := fast(5)
	opts.Reactors = []projections.Reactor{countingReactor{&handled}}
	r := e.startWith(t, src, projections.All(), opts)

	const commands = 20
	var last eventstore.Position
	for range commands {
		id := uuid.New()
		last = e.register(t, id, id.String()+"@x.org")
		waitFor(t, r, last)
	}
	require.Eventually(t, func() bool {
		for _, s := range r.Status() {
			if s.Position != last {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, int64(e.events(t)), handled.Load(), "the reactor saw every event once")
	// Five workers read every batch themselves before: at least 5 × 20.
	assert.LessOrEqual(t, src.reads.Load(), int64(commands+5), "reads of the log that returned events")
	// At the head the feed reads before it waits (under load the next
	// events are there): one empty read per batch when the log is idle.
	assert.LessOrEqual(t, src.all.Load(), int64(2*commands+5), "reads of the log in all")
	assert.Equal(t, 20, len(e.dump(t)["users"]))
}

// countCommits counts the commits of the SQLite write connection (events and
// read models share it) from now on.
func countCommits(t *testing.T, e *env) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	conn, err := e.db.Write.Conn(context.Background())
	require.NoError(t, err)
	require.NoError(t, conn.Raw(func(dc any) error {
		dc.(sqlite.HookRegisterer).RegisterCommitHook(func() int32 { n.Add(1); return 0 })
		return nil
	}))
	require.NoError(t, conn.Close())
	return &n
}

// On SQLite one batch of every projection commits once: one transaction
// (one fsync) per command on the read side, not one per projection.
func TestSQLiteProjectionsShareOneTransactionPerBatch(t *testing.T) {
	e := newEnv(t, readmodels.DialectSQLite)
	r, _ := e.start(t, projections.All(), fast(5))
	waitFor(t, r, e.register(t, uuid.New(), "first@x.org"))
	commits := countCommits(t, e)

	const commands = 20
	for range commands {
		id := uuid.New()
		waitFor(t, r, e.register(t, id, id.String()+"@x.org"))
	}
	readSide := commits.Load() - commands // one commit per append
	// One transaction per projection made it 4 × 20.
	assert.LessOrEqual(t, readSide, int64(commands+2), "read-model commits")
	for _, name := range []string{projections.NameUsers, projections.NameSessions, projections.NameActivationTokens, projections.NameAudit} {
		assert.Equal(t, e.last(t), checkpoint(t, e, name), name)
	}
}

// On PostgreSQL too, the projections whose leases this process holds apply
// a batch in one transaction: their checkpoints, all at the batch's end,
// were written by one transaction (the rows' xmin), not one per projection.
func TestPostgresProjectionsWithLeasesShareOneTransactionPerBatch(t *testing.T) {
	e := newEnv(t, readmodels.DialectPostgres)
	opts := fast(5)
	opts.Leases = always{}
	r, _ := e.start(t, projections.All(), opts)
	conn, err := pgx.Connect(context.Background(), e.url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	writers := func() int {
		var n int
		require.NoError(t, conn.QueryRow(context.Background(),
			`SELECT count(DISTINCT xmin::text) FROM checkpoints WHERE name = ANY($1)`,
			[]string{projections.NameUsers, projections.NameSessions, projections.NameActivationTokens, projections.NameAudit}).Scan(&n))
		return n
	}
	// The first batch each projection applies on its own, catching up; then
	// it joins the others.
	var last eventstore.Position
	for range 10 {
		id := uuid.New()
		last = e.register(t, id, id.String()+"@x.org")
		waitFor(t, r, last)
	}
	for _, name := range []string{projections.NameUsers, projections.NameSessions, projections.NameActivationTokens, projections.NameAudit} {
		require.Equal(t, last, checkpoint(t, e, name), name)
	}
	assert.Equal(t, 1, writers(), "transactions that wrote the last batch's checkpoints")
}

// A batch the group commits for all four projections wakes the commands
// waiting for their read models once, not once per projection.
func TestGroupBatchWakesWaitersOnce(t *testing.T) {
	e := newEnv(t, readmodels.DialectPostgres)
	opts := fast(5)
	opts.Leases = always{}
	r, _ := e.start(t, projections.All(), opts)
	for range 10 { // the projections catch up on their own, then join the group
		id := uuid.New()
		waitFor(t, r, e.register(t, id, id.String()+"@x.org"))
	}
	for range 5 {
		before := r.Wakes()
		id := uuid.New()
		waitFor(t, r, e.register(t, id, id.String()+"@x.org"))
		// One append: one batch, or two if the read caught it half
		// (it cannot: one transaction), never four.
		assert.LessOrEqual(t, r.Wakes()-before, int64(2), "wake-ups for one command")
	}
}

// last is the position of the newest event of the log.
func (e *env) last(t *testing.T) eventstore.Position {
	t.Helper()
	evs := e.all(t)
	require.NotEmpty(t, evs)
	return evs[len(evs)-1].Position
}

// A projection whose Apply fails does not hold the others back, shared
// transaction or not; once it succeeds it catches up, nothing lost or twice.
func TestFailingProjectionDoesNotStopTheOthers(t *testing.T) {
	eachDialect(t, testFailingProjectionDoesNotStopTheOthers)
}

func testFailingProjectionDoesNotStopTheOthers(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	var failing atomic.Bool
	failing.Store(true)
	audit := &flaky{Projection: projections.Audit(), fail: func(eventstore.RecordedEvent) error {
		if failing.Load() {
			return errors.New("audit is broken")
		}
		return nil
	}}
	opts := fast(1_000_000) // never parks here
	r, _ := e.start(t, []projections.Projection{projections.Users(), projections.Sessions(), projections.ActivationTokens(), audit}, opts)

	var last eventstore.Position
	for range 5 {
		id := uuid.New()
		last = e.register(t, id, id.String()+"@x.org")
	}
	require.Eventually(t, func() bool {
		for _, s := range r.Status() {
			if s.Name != projections.NameAudit && s.Position != last {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "the others reach the head")
	assert.Len(t, e.dump(t)["users"], 5)
	assert.True(t, checkpoint(t, e, projections.NameAudit).IsZero(), "audit moved nothing")
	// The others may reach the head before audit's first attempt has failed.
	assert.Eventually(t, func() bool {
		for _, s := range r.Status() {
			if s.Name == projections.NameAudit {
				return strings.Contains(s.LastError, "audit is broken")
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "audit reports its failure")

	failing.Store(false)
	waitFor(t, r, last)
	assert.Equal(t, 5, auditCount(t, e), "every registration audited once")
	id := uuid.New()
	waitFor(t, r, e.register(t, id, id.String()+"@x.org"))
	assert.Equal(t, 6, auditCount(t, e))
	parked, err := e.rm.Parked(context.Background())
	require.NoError(t, err)
	assert.Empty(t, parked)
}

// A reactor that only moves on does not store its checkpoint per batch: it
// stores it when it stops, or once ReactorCheckpointEvery has passed.
func TestReactorCheckpointIsStoredLazily(t *testing.T) {
	eachDialect(t, testReactorCheckpointIsStoredLazily)
}

func testReactorCheckpointIsStoredLazily(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	const name = "counting-reactor"
	reactorAt := func(r *projections.Runner) eventstore.Position {
		for _, s := range r.Status() {
			if s.Name == name {
				return s.Position
			}
		}
		return eventstore.Position{}
	}
	var handled atomic.Int64

	t.Run("at shutdown", func(t *testing.T) {
		opts := fast(5)
		opts.Reactors = []projections.Reactor{countingReactor{&handled}}
		opts.ReactorCheckpointEvery = time.Hour
		r, stop := e.start(t, nil, opts)
		var last eventstore.Position
		for range 10 {
			id := uuid.New()
			last = e.register(t, id, id.String()+"@x.org")
			require.Eventually(t, func() bool { return reactorAt(r) == last }, 10*time.Second, time.Millisecond)
		}
		assert.True(t, checkpoint(t, e, name).IsZero(), "nothing stored within the hour")
		stop()
		assert.Equal(t, last, checkpoint(t, e, name), "stored on the way out")
	})

	t.Run("within the interval", func(t *testing.T) {
		opts := fast(5)
		opts.Reactors = []projections.Reactor{countingReactor{&handled}}
		opts.ReactorCheckpointEvery = 200 * time.Millisecond
		r, _ := e.start(t, nil, opts)
		id := uuid.New()
		last := e.register(t, id, id.String()+"@x.org")
		require.Eventually(t, func() bool { return reactorAt(r) == last }, 10*time.Second, time.Millisecond)
		require.Eventually(t, func() bool { return checkpoint(t, e, name) == last }, 5*time.Second, 10*time.Millisecond,
			"stored while the log is quiet")
	})
	assert.Equal(t, int64(e.events(t)), handled.Load(), "each event once: the second runner began where the first stopped")
}

// crawl slows every event down, as a projection being rebuilt from far
// behind would be.
type crawl struct{ projections.Projection }

func (c crawl) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	time.Sleep(20 * time.Millisecond)
	return c.Projection.Apply(tx, ev)
}

// A projection far behind catches up on its own: the projections at the
// head do not wait for it, shared SQLite transaction or not.
func TestProjectionCatchingUpDoesNotHoldTheOthersBack(t *testing.T) {
	eachDialect(t, testProjectionCatchingUpDoesNotHoldTheOthersBack)
}

func testProjectionCatchingUpDoesNotHoldTheOthersBack(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	for range 30 {
		id := uuid.New()
		e.register(t, id, id.String()+"@x.org")
	}
	opts := fast(5)
	opts.BatchSize = 5
	first, stop := e.start(t, []projections.Projection{projections.Users(), projections.Sessions()}, opts)
	waitFor(t, first, e.last(t))
	stop()

	// Audit starts from the beginning, 60 events at 20 ms each.
	r, _ := e.start(t, []projections.Projection{projections.Users(), projections.Sessions(), crawl{projections.Audit()}}, opts)
	at := func(name string) eventstore.Position {
		for _, s := range r.Status() {
			if s.Name == name {
				return s.Position
			}
		}
		return eventstore.Position{}
	}
	id := uuid.New()
	last := e.register(t, id, id.String()+"@x.org")
	require.Eventually(t, func() bool { return at(projections.NameUsers) == last }, 10*time.Second, time.Millisecond)
	assert.True(t, at(projections.NameAudit).Less(last), "audit is still catching up")
	waitFor(t, r, last)
	assert.Equal(t, 31, auditCount(t, e))
	assert.Len(t, e.dump(t)["users"], 31)
}

// Only reactors store their checkpoint lazily: a projection that has been
// working for longer than ReactorCheckpointEvery must not try to store a
// reactor's checkpoint of its own, find its real one moved, and give its
// lease up (which it did on every batch on PostgreSQL).
func TestProjectionsNeverTakeTheReactorCheckpointPath(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		var logs syncBuffer
		opts := fast(5)
		opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		opts.ReactorCheckpointEvery = 20 * time.Millisecond
		r, stop := e.start(t, projections.All(), opts)
		defer stop()
		var last eventstore.Position
		for range 15 {
			id := uuid.New()
			last = e.register(t, id, id.String()+"@x.org")
			waitFor(t, r, last)
			time.Sleep(30 * time.Millisecond) // past the interval, between batches
		}
		for _, s := range r.Status() {
			assert.Empty(t, s.LastError, s.Name)
		}
		assert.NotContains(t, logs.String(), "checkpoint moved")
	})
}

// countingLeases grants every lease at once and counts the grants: a worker
// acquires its lease again each time a term of it ends.
type countingLeases struct{ n *atomic.Int64 }

func (c countingLeases) Acquire(context.Context, string) (projections.Lease, error) {
	c.n.Add(1)
	return granted{}, nil
}

// A projection's term does not end when the log goes quiet: the lazy
// checkpoint of reactors is theirs alone. It used to fire for projections
// too, a second after their first batch, trying to move their checkpoint
// from where the term began: ErrCheckpointMoved, a "moved by another
// process" warning, the lease given back and taken again (another process
// could take it), and the term restarted, after every quiet second.
func TestQuietLogDoesNotEndAProjectionsTerm(t *testing.T) {
	eachDialect(t, testQuietLogDoesNotEndAProjectionsTerm)
}

func testQuietLogDoesNotEndAProjectionsTerm(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	var acquired atomic.Int64
	var logs syncBuffer
	opts := fast(5)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	opts.Leases = countingLeases{&acquired}
	opts.ReactorCheckpointEvery = 50 * time.Millisecond
	r, _ := e.start(t, []projections.Projection{counter{}}, opts)
	for range 3 {
		waitFor(t, r, e.register(t, uuid.New(), uuid.NewString()+"@x.org"))
		time.Sleep(300 * time.Millisecond) // quiet for several intervals
	}
	assert.Equal(t, int64(1), acquired.Load(), "the projection's term restarted; log:\n%s", logs.String())
	assert.NotContains(t, logs.String(), "checkpoint moved")
	for _, s := range r.Status() {
		assert.Empty(t, s.LastError, "%s", s.Name)
	}
	assert.Equal(t, e.events(t), e.count(t), "each event applied once")
}

// A projection that handles none of a batch's events moves its checkpoint
// without a transaction, and still reaches the head: WaitFor answers, the
// checkpoint is stored, and the events it does handle later are applied.
func TestProjectionSkipsBatchesItDoesNotHandle(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		r, stop := e.start(t, []projections.Projection{projections.Sessions()}, fast(5))
		defer stop()
		var last eventstore.Position
		for range 5 {
			id := uuid.New()
			last = e.register(t, id, id.String()+"@x.org") // nothing for sessions
			waitFor(t, r, last)
		}
		assert.Equal(t, last, checkpoint(t, e, projections.NameSessions), "stored at the head")
		id := uuid.New()
		e.register(t, id, id.String()+"@x.org")
		sid := uuid.New()
		last = e.append(t, sessionStream(sid), session.LoggedIn{SessionID: sid, UserID: id, TokenHash: "h", ExpiresAt: t0.Add(time.Hour)})
		waitFor(t, r, last)
		assert.Len(t, e.dump(t)["sessions"], 1, "a handled event is applied")
	})
}

// refused wraps a projection and, for one event, writes a row the database
// refuses (PostgreSQL text holds no NUL): Apply returns nil, and on
// PostgreSQL, where a batch's writes are sent together at its end, the
// failure shows only then.
type refused struct {
	projections.Projection
	poison uuid.UUID
}

func (f *refused) Tables() []string { return f.Projection.(projections.Tabled).Tables() }

func (f *refused) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if ev.ID == f.poison {
		return tx.PutUser(readmodels.User{ID: uuid.New(), Name: "nul\x00", Status: "pending", Version: 1})
	}
	return f.Projection.Apply(tx, ev)
}

// A write that fails only when its batch is sent is traced to its event and
// projection: that event is parked for that projection alone, and the
// others apply everything.
func TestRefusedWriteParksOnlyItsEvent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, readmodels.DialectPostgres)
	for i := range 6 {
		id := uuid.New()
		e.append(t, userStream(id), user.Created{UserID: id, Email: fmt.Sprintf("r%d@x.org", i), Name: "R"})
	}
	poison := e.all(t)[2]
	users := &refused{Projection: projections.Users(), poison: poison.ID}
	r, _ := e.start(t, []projections.Projection{users, projections.Audit()}, fast(2))
	waitFor(t, r, eventstore.At(6))

	assert.Equal(t, 6, auditCount(t, e), "audit is not held back")
	assert.Len(t, e.dump(t)["users"], 5, "every user but the poison event's")
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, projections.NameUsers, parked[0].Projection)
	assert.Equal(t, poison.ID.String(), parked[0].EventID)
	assert.Equal(t, 3, parked[0].Attempts, "the first try and two retries")
}
