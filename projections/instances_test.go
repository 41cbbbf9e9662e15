package projections_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"
)

// counter is a projection that is not idempotent on purpose: it counts the
// events it applies, in a row of the checkpoints table (so Dump leaves it
// out). Any event applied twice, or lost, shows in the count.
type counter struct {
	gate func(ev eventstore.RecordedEvent) // called first in every Apply; nil for none
}

const counterName = "counter"

func (counter) Name() string { return counterName }

func (c counter) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if c.gate != nil {
		c.gate(ev)
	}
	n, err := tx.Checkpoint(counterName + ".count")
	if err != nil {
		return err
	}
	return tx.SetCheckpoint(counterName+".count", eventstore.At(n.Commit+1))
}

func (e *env) count(t *testing.T) uint64 {
	t.Helper()
	cp, err := e.rm.Checkpoint(context.Background(), counterName+".count")
	require.NoError(t, err)
	return cp.Commit
}

func (e *env) events(t *testing.T) uint64 {
	t.Helper()
	n, err := e.es.Count(context.Background())
	require.NoError(t, err)
	return uint64(n)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// always grants every lease at once and never loses one: with it, every
// Runner believes it is the only one, as a zombie leader does.
type always struct{}

func (always) Acquire(context.Context, string) (projections.Lease, error) { return granted{}, nil }

type granted struct{}

func (granted) Lost() <-chan struct{} { return nil }
func (granted) Release()              {}

// bgT lets a background goroutine fail the test without FailNow's rule that
// only the test goroutine may call it.
type bgT struct{ t *testing.T }

func (b bgT) Errorf(format string, args ...any) { b.t.Errorf(format, args...) }
func (b bgT) FailNow()                          { runtime.Goexit() }

// appendUntil appends user events until stop is closed, then reports the
// position of the last.
func (e *env) appendUntil(t *testing.T, stop <-chan struct{}) <-chan eventstore.Position {
	out := make(chan eventstore.Position, 1)
	go func() {
		var last eventstore.Position
		defer func() { out <- last }()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := uuid.New()
			name := fmt.Sprint("n", i)
			last = e.appendCtx(context.Background(), bgT{t}, userStream(id),
				user.Created{UserID: id, Email: id.String() + "@x.org", Name: "C"},
				user.Updated{UserID: id, Name: &name, UpdatedBy: "admin"})
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return out
}

func TestZombieLeadersApplyEachEventOnce(t *testing.T) {
	eachDialect(t, testZombieLeadersApplyEachEventOnce)
}

// Two Runners that both think they hold every lease (a zombie and its
// successor) run side by side under a workload: the conditional checkpoint
// lets only one of them commit each batch.
func testZombieLeadersApplyEachEventOnce(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	opts := fast(5)
	opts.BatchSize = 3
	opts.Leases = always{}
	other := e.rm
	if dialect == readmodels.DialectPostgres {
		other = e.instance(t, "")
	}
	ps := func() []projections.Projection { return append(projections.All(), counter{}) }
	r1, _ := e.start(t, ps(), opts)
	r2, _ := e.startOn(t, other, ps(), opts)

	stop := make(chan struct{})
	lastCh := e.appendUntil(t, stop)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	last := <-lastCh
	require.False(t, last.IsZero())
	waitFor(t, r1, last)
	waitFor(t, r2, last)

	assert.Equal(t, e.events(t), e.count(t), "every event counted once")
	for _, p := range ps() {
		assert.Equal(t, last, checkpoint(t, e, p.Name()), p.Name())
	}
}

func TestZombieLeaderCannotCommitAStaleBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, readmodels.DialectPostgres)
	for i := range 10 {
		id := uuid.New()
		e.append(t, userStream(id), user.Created{UserID: id, Email: fmt.Sprintf("z%d@x.org", i), Name: "Z"})
	}
	last := eventstore.At(10)

	// The zombie starts a batch from checkpoint zero and stalls in it.
	stalled, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	zopts := fast(5)
	zopts.Leases = always{}
	var logs syncBuffer
	zopts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	zombie, _ := e.startOn(t, e.instance(t, ""), []projections.Projection{counter{gate: func(eventstore.RecordedEvent) {
		once.Do(func() {
			close(stalled)
			<-resume
		})
	}}}, zopts)
	<-stalled

	// Meanwhile its successor projects everything.
	lopts := fast(5)
	lopts.Leases = always{}
	leader, _ := e.start(t, []projections.Projection{counter{}}, lopts)
	waitFor(t, leader, last)
	require.Equal(t, uint64(10), e.count(t))

	// The zombie wakes up: its batch counts again, then cannot move the
	// checkpoint from zero and is rolled back.
	close(resume)
	require.Eventually(t, func() bool {
		st := zombie.Status()[0]
		return st.Position == last && st.Running
	}, 10*time.Second, 5*time.Millisecond, "the zombie starts over from the stored checkpoint")
	assert.Equal(t, uint64(10), e.count(t), "the stale batch left nothing")
	assert.Contains(t, logs.String(), "checkpoint moved by another process")
	assert.Equal(t, last, checkpoint(t, e, counterName))
}

// instanceOpts are the options of one instance sharing the database.
func instanceOpts(t *testing.T, rm *readmodels.Store) projections.Options {
	t.Helper()
	l, err := rm.Leases(readmodels.LeaseOptions{RetryInterval: 50 * time.Millisecond, PingInterval: 200 * time.Millisecond})
	require.NoError(t, err)
	opts := fast(5)
	opts.BatchSize = 5
	opts.Leases = projections.StoreLeases(l)
	return opts
}

// runningIn reports, per worker name, how many of the runners run it.
func runningIn(rs ...*projections.Runner) map[string]int {
	out := map[string]int{}
	for _, r := range rs {
		for _, s := range r.Status() {
			if s.Running {
				out[s.Name]++
			} else {
				out[s.Name] += 0
			}
		}
	}
	return out
}

func allIn(r *projections.Runner, running bool) bool {
	for _, s := range r.Status() {
		if s.Running != running || s.Standby == running {
			return false
		}
	}
	return true
}

// cutOff ends every session of an application on the server, as a network
// cut or a database restart would for that instance.
func (e *env) cutOff(t *testing.T, app string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app)
	require.NoError(t, err)
}

// tryCutOff is cutOff for a polling loop: errors are ignored, the next
// round tries again.
func (e *env) tryCutOff(app string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app)
}

func TestInstancesShareTheWorkAndFailOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, readmodels.DialectPostgres)
	apps := []string{"evident-a-" + rand.Text()[:8], "evident-b-" + rand.Text()[:8], "evident-c-" + rand.Text()[:8]}
	a, b, c := e.instance(t, apps[0]), e.instance(t, apps[1]), e.instance(t, apps[2])
	var reacted atomic.Int64
	ps := func() []projections.Projection { return append(projections.All(), counter{}) }
	withReactor := func(o projections.Options) projections.Options {
		o.Reactors = []projections.Reactor{countingReactor{&reacted}}
		return o
	}

	ra, stopA := e.startOn(t, a, ps(), withReactor(instanceOpts(t, a)))
	defer stopA()
	require.Eventually(t, func() bool { return allIn(ra, true) }, 10*time.Second, 10*time.Millisecond, "the first instance takes everything")
	rb, stopB := e.startOn(t, b, ps(), withReactor(instanceOpts(t, b)))
	rc, stopC := e.startOn(t, c, ps(), withReactor(instanceOpts(t, c)))
	require.Eventually(t, func() bool { return allIn(rb, false) && allIn(rc, false) }, 10*time.Second, 10*time.Millisecond,
		"the others stand by")

	// Under a steady workload, the first instance stops (its context ends, as
	// on SIGTERM) and the others take over.
	stop := make(chan struct{})
	lastCh := e.appendUntil(t, stop)
	time.Sleep(200 * time.Millisecond)
	stopA()
	stoppedAt := time.Now()
	require.Eventually(t, func() bool {
		for _, n := range runningIn(ra, rb, rc) {
			if n != 1 {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "each worker runs in exactly one instance again")
	t.Logf("failover after a stop took %s", time.Since(stoppedAt))

	// Then the server cuts off whichever instance runs the users projection,
	// without that instance's process noticing anything but failures.
	holder, survivor := apps[1], rc
	for _, s := range rc.Status() {
		if s.Name == projections.NameUsers && s.Running {
			holder, survivor = apps[2], rb
		}
	}
	time.Sleep(200 * time.Millisecond)
	// Cut off and kept cut off (a partition, not a blip) until the survivor
	// runs it: the holder's pool would otherwise reconnect at once and
	// could win the lease back, which is allowed but not what this tests.
	e.cutOff(t, holder)
	cutAt := time.Now()
	require.Eventually(t, func() bool {
		e.tryCutOff(holder)
		for _, s := range survivor.Status() {
			if s.Name == projections.NameUsers {
				return s.Running
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, "the survivor takes the users projection over")
	t.Logf("failover after a cut took %s", time.Since(cutAt))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	last := <-lastCh

	// Read-your-writes on every instance, whichever runs what.
	for _, r := range []*projections.Runner{rb, rc} {
		waitFor(t, r, last)
	}
	require.Eventually(t, func() bool {
		for _, n := range runningIn(rb, rc) {
			if n != 1 {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond, "the cut-off instance came back as a standby")

	assert.Equal(t, e.events(t), e.count(t), "every event applied exactly once")
	require.Eventually(t, func() bool { return reacted.Load() >= int64(e.events(t)) }, 10*time.Second, 10*time.Millisecond,
		"the reactor saw every event (at least once)")
	live := e.dump(t)
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	assert.Empty(t, parked, "an outage parks nothing")

	// The live tables equal a clean rebuild.
	stopB()
	stopC()
	require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, projections.All()))
	assert.Equal(t, live, e.dump(t))
	assert.Len(t, live["audit"], int(e.events(t)), "one audit row per event, no gaps, no duplicates")
}

type countingReactor struct{ n *atomic.Int64 }

func (countingReactor) Name() string { return "counting-reactor" }

func (c countingReactor) Handle(context.Context, eventstore.RecordedEvent) error {
	c.n.Add(1)
	return nil
}

func TestWaitForOnAStandbyInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t, readmodels.DialectPostgres)
	a, b := e.instance(t, ""), e.instance(t, "")
	ra, _ := e.startOn(t, a, projections.All(), instanceOpts(t, a))
	require.Eventually(t, func() bool { return allIn(ra, true) }, 10*time.Second, 10*time.Millisecond)
	rb, _ := e.startOn(t, b, projections.All(), instanceOpts(t, b))
	require.Eventually(t, func() bool { return allIn(rb, false) }, 10*time.Second, 10*time.Millisecond)

	for range 5 {
		id := uuid.New()
		pos := e.register(t, id, id.String()+"@x.org")
		began := time.Now()
		waitFor(t, rb, pos)
		assert.Less(t, time.Since(began), 2*time.Second)
		_, err := b.User(context.Background(), id)
		require.NoError(t, err, "read your writes on the standby")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, rb.WaitFor(ctx, eventstore.At(1_000_000)), context.DeadlineExceeded)
	for _, s := range rb.Status() {
		assert.True(t, s.Standby, s.Name)
		assert.False(t, s.Position.IsZero(), "%s: what the standby saw", s.Name)
	}
}

// The leader's NOTIFY is sent after its commit, so a crash between the two
// loses it: a standby's WaitFor still returns, on its fallback poll.
func TestWaitForOnAStandbyWithoutNotifications(t *testing.T) {
	t.Parallel()
	e := newEnv(t, readmodels.DialectPostgres)
	a, b := e.instance(t, ""), e.instance(t, "")
	require.NoError(t, a.Close()) // its notifier is gone: its commits notify nobody
	ra, _ := e.startOn(t, a, projections.All(), instanceOpts(t, a))
	require.Eventually(t, func() bool { return allIn(ra, true) }, 10*time.Second, 10*time.Millisecond)
	rb, _ := e.startOn(t, b, projections.All(), instanceOpts(t, b))
	require.Eventually(t, func() bool { return allIn(rb, false) && b.Listening() }, 10*time.Second, 10*time.Millisecond)

	id := uuid.New()
	pos := e.register(t, id, id.String()+"@x.org")
	began := time.Now()
	waitFor(t, rb, pos)
	assert.Less(t, time.Since(began), 3*time.Second)
	_, err := b.User(context.Background(), id)
	require.NoError(t, err, "read your writes on the standby")
}
