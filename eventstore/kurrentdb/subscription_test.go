package kurrentdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
)

// fakeSource is a scripted source: each subscribe takes the next script,
// which either fails to open or delivers its messages and then stays open
// (or drops, when its last message carries an error). It is no database:
// it replays what a server sends, so that the loops around it can be
// checked against drops, repeats and silences.
type fakeSource struct {
	mu      sync.Mutex
	scripts []script
	afters  []eventstore.Position // where each subscribe asked to start
	subs    []*fakeSub
}

type script struct {
	openErr error
	msgs    []message
}

type fakeSub struct {
	c      chan message
	closed chan struct{}
	once   sync.Once
}

func (f *fakeSub) messages() <-chan message { return f.c }
func (f *fakeSub) close()                   { f.once.Do(func() { close(f.closed) }) }

func (f *fakeSource) subscribe(ctx context.Context, after eventstore.Position) (subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.afters = append(f.afters, after)
	if len(f.scripts) == 0 {
		return nil, fmt.Errorf("fake: no script left: %w", errors.ErrUnsupported)
	}
	sc := f.scripts[0]
	f.scripts = f.scripts[1:]
	if sc.openErr != nil {
		return nil, sc.openErr
	}
	sub := &fakeSub{c: make(chan message, len(sc.msgs)+100), closed: make(chan struct{})}
	for _, m := range sc.msgs {
		sub.c <- m
	}
	f.subs = append(f.subs, sub)
	return sub, nil
}

func (f *fakeSource) startedAt() []eventstore.Position {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]eventstore.Position(nil), f.afters...)
}

func pos(n uint64) eventstore.Position { return eventstore.Position{Commit: n * 100, Prepare: n * 100} }

func ev(stream string, n uint64) message {
	return message{event: &eventstore.RecordedEvent{ID: uuid.New(), Stream: stream, Type: "test.happened", Position: pos(n)}}
}

var (
	caughtUp   = message{caughtUp: true}
	checkpoint = message{checkpoint: true}
	dropped    = message{err: fmt.Errorf("connection reset: %w", eventstore.ErrUnavailable)}
	evident    = newFilter(Options{}.withDefaults())
	tiny       = backoff{min: time.Millisecond, max: 4 * time.Millisecond}
)

func positions(evs []eventstore.RecordedEvent) []eventstore.Position {
	if len(evs) == 0 {
		return nil
	}
	out := make([]eventstore.Position, len(evs))
	for i, e := range evs {
		out[i] = e.Position
	}
	return out
}

func TestFollowResubscribesWithoutLossOrRepeat(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	src := &fakeSource{scripts: []script{
		// Catch-up from the checkpoint, then the connection breaks.
		{msgs: []message{ev("user-a", 1), ev("order-x", 2), ev("user-b", 3), checkpoint, dropped}},
		// The server is restarting.
		{openErr: fmt.Errorf("dial: %w", eventstore.ErrUnavailable)},
		// Resubscribed from the last event, the server sends the start
		// position and what preceded it again before anything new.
		{msgs: []message{ev("user-a", 1), ev("order-x", 2), ev("user-b", 3), ev("session-c", 4), caughtUp, ev("email-d", 5)}},
	}}

	var got []eventstore.Position
	err := follow(ctx, src, evident, eventstore.Position{}, tiny, func(_ context.Context, e eventstore.RecordedEvent) error {
		got = append(got, e.Position)
		if e.Position == pos(5) {
			cancel()
		}
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []eventstore.Position{pos(1), pos(3), pos(4), pos(5)}, got,
		"every selected event once, in order: none lost in the drop, none repeated after it")
	assert.Equal(t, []eventstore.Position{{}, pos(3), pos(3)}, src.startedAt(),
		"each resubscription starts from the last event seen")
}

func TestFollowStartsAfterTheCheckpoint(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// A server that sends the event at the start position too.
	src := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 7), ev("user-a", 8)}}}}
	var got []eventstore.Position
	err := follow(ctx, src, evident, pos(7), tiny, func(_ context.Context, e eventstore.RecordedEvent) error {
		got = append(got, e.Position)
		cancel()
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, []eventstore.Position{pos(8)}, got)
}

func TestFollowReturnsHandlerErrorAsIs(t *testing.T) {
	t.Parallel()
	poison := errors.New("poison event")
	src := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 1), ev("user-a", 2)}}}}
	calls := 0
	err := follow(t.Context(), src, evident, eventstore.Position{}, tiny, func(context.Context, eventstore.RecordedEvent) error {
		calls++
		return poison
	})
	assert.Same(t, poison, err, "the caller's own error, not wrapped, not retried")
	assert.Equal(t, 1, calls)
	assert.Len(t, src.startedAt(), 1, "no resubscription after a handler error")
	assert.Eventually(t, func() bool {
		select {
		case <-src.sub(0).closed:
			return true
		default:
			return false
		}
	}, time.Second, time.Millisecond, "the subscription is closed")
}

func TestFollowGivesUpOnLastingFailures(t *testing.T) {
	t.Parallel()
	denied := errors.New("kurrentdb eventstore: subscribe: check the credentials in the connection string")
	src := &fakeSource{scripts: []script{
		{openErr: fmt.Errorf("a: %w", eventstore.ErrUnavailable)},
		{openErr: fmt.Errorf("b: %w", eventstore.ErrUnavailable)},
		{openErr: denied},
	}}
	err := follow(t.Context(), src, evident, pos(1), tiny, func(context.Context, eventstore.RecordedEvent) error { return nil })
	assert.Same(t, denied, err, "only unavailability is waited out")
	assert.Equal(t, []eventstore.Position{pos(1), pos(1), pos(1)}, src.startedAt())

	dropDenied := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 2), {err: denied}}}}}
	err = follow(t.Context(), dropDenied, evident, pos(1), tiny, func(context.Context, eventstore.RecordedEvent) error { return nil })
	assert.Same(t, denied, err)
}

func TestFollowHonoursCtxWhileBackingOff(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	var scripts []script
	for range 1000 {
		scripts = append(scripts, script{openErr: eventstore.ErrUnavailable})
	}
	src := &fakeSource{scripts: scripts}
	start := time.Now()
	err := follow(ctx, src, evident, pos(1), backoff{min: 10 * time.Millisecond, max: time.Hour}, func(context.Context, eventstore.RecordedEvent) error { return nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 2*time.Second)
	n := len(src.startedAt())
	assert.Greater(t, n, 1)
	assert.Less(t, n, 10, "attempts are spaced by a growing backoff, not a busy loop")
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	for range 100 {
		d1 := b.delay(1)
		assert.GreaterOrEqual(t, d1, 50*time.Millisecond)
		assert.LessOrEqual(t, d1, 100*time.Millisecond)
		d4 := b.delay(4)
		assert.GreaterOrEqual(t, d4, 400*time.Millisecond)
		assert.LessOrEqual(t, d4, 800*time.Millisecond)
		dMax := b.delay(60)
		assert.GreaterOrEqual(t, dMax, 5*time.Second)
		assert.LessOrEqual(t, dMax, 10*time.Second, "capped")
	}
}

func TestCatchUp(t *testing.T) {
	t.Parallel()
	idle := 5 * time.Second // long: these cases must end for another reason
	for _, tc := range []struct {
		name  string
		after eventstore.Position
		limit int
		msgs  []message
		want  []eventstore.Position
	}{
		{"stops at caught-up", pos(0), 10,
			[]message{ev("user-a", 1), ev("user-b", 2), caughtUp, ev("user-c", 3)},
			[]eventstore.Position{pos(1), pos(2)}},
		{"stops at the limit", pos(0), 2,
			[]message{ev("user-a", 1), ev("user-b", 2), ev("user-c", 3)},
			[]eventstore.Position{pos(1), pos(2)}},
		{"strictly after: the event at after is dropped", pos(1), 10,
			[]message{ev("user-a", 1), ev("user-b", 2), caughtUp},
			[]eventstore.Position{pos(2)}},
		{"filtered again: system and foreign events never count", pos(0), 2,
			[]message{ev("$stats-1", 1), ev("order-1", 2), ev("user-a", 3), checkpoint, ev("session-b", 4), ev("user-c", 5)},
			[]eventstore.Position{pos(3), pos(4)}},
		{"nothing new", pos(9), 10,
			[]message{caughtUp},
			nil},
	} {
		src := &fakeSource{scripts: []script{{msgs: tc.msgs}}}
		got, err := catchUp(t.Context(), src, evident, tc.after, tc.limit, idle)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, positions(got), tc.name)
		assert.Equal(t, []eventstore.Position{tc.after}, src.startedAt(), tc.name)
		select {
		case <-src.sub(0).closed:
		default:
			t.Errorf("%s: the subscription was left open", tc.name)
		}
	}
}

func TestCatchUpNeverTakesADropForTheEnd(t *testing.T) {
	t.Parallel()
	src := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 1), dropped}}}}
	got, err := catchUp(t.Context(), src, evident, pos(0), 10, 5*time.Second)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	assert.Nil(t, got, "no partial page with an error")

	src = &fakeSource{scripts: []script{{openErr: fmt.Errorf("x: %w", eventstore.ErrUnavailable)}}}
	_, err = catchUp(t.Context(), src, evident, pos(0), 10, 5*time.Second)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
}

func TestCatchUpEndsAfterSilence(t *testing.T) {
	t.Parallel()
	// A server that never says "caught up" (EventStoreDB before 23.10).
	src := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 1)}}}}
	start := time.Now()
	got, err := catchUp(t.Context(), src, evident, pos(0), 10, 30*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, []eventstore.Position{pos(1)}, positions(got))
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestCatchUpCheckpointsKeepItReading(t *testing.T) {
	t.Parallel()
	// The server scans a long run of events the filter drops; its
	// checkpoints show progress, so the read does not give up on it.
	src := &fakeSource{scripts: []script{{}}}
	go func() {
		for src.subCount() == 0 {
			time.Sleep(time.Millisecond)
		}
		sub := src.sub(0)
		for range 10 {
			time.Sleep(20 * time.Millisecond)
			sub.c <- checkpoint
		}
		sub.c <- ev("user-a", 9)
		sub.c <- caughtUp
	}()
	got, err := catchUp(t.Context(), src, evident, pos(0), 10, 100*time.Millisecond)
	require.NoError(t, err)
	assert.Equal(t, []eventstore.Position{pos(9)}, positions(got))
}

func TestCatchUpCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	src := &fakeSource{scripts: []script{{}}}
	done := make(chan error, 1)
	go func() {
		_, err := catchUp(ctx, src, evident, pos(0), 10, time.Hour)
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("catchUp ignored its context")
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	src := &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 4), ev("order-1", 5), checkpoint, caughtUp, ev("user-b", 6)}}}}
	require.NoError(t, waitFor(t.Context(), src, evident, pos(4)), "the event at after and foreign ones do not count")

	src = &fakeSource{scripts: []script{{msgs: []message{ev("user-a", 4), caughtUp, dropped}}}}
	assert.ErrorIs(t, waitFor(t.Context(), src, evident, pos(4)), eventstore.ErrUnavailable, "a drop is reported, not waited out")
	assert.Len(t, src.startedAt(), 1)

	ctx, cancel := context.WithCancel(t.Context())
	src = &fakeSource{scripts: []script{{msgs: []message{caughtUp}}}}
	done := make(chan error, 1)
	go func() { done <- waitFor(ctx, src, evident, pos(4)) }()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("waitFor ignored its context")
	}
}

func (f *fakeSource) subCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeSource) sub(i int) *fakeSub {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs[i]
}

func TestFollowBacksOffFromSubscriptionsThatDropAtOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	var scripts []script
	for range 1000 {
		scripts = append(scripts, script{msgs: []message{dropped}})
	}
	src := &fakeSource{scripts: scripts}
	err := follow(ctx, src, evident, pos(1), backoff{min: 5 * time.Millisecond, max: time.Hour}, func(context.Context, eventstore.RecordedEvent) error { return nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	n := len(src.startedAt())
	assert.Greater(t, n, 1)
	assert.Less(t, n, 12, "a subscription that only drops does not reset the backoff")
}
