package postgres

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
)

// horizonPolls reports each look at the horizon that awaitHorizon takes.
type horizonPolls chan struct{}

type pollKey struct{}

func (h horizonPolls) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, pollKey{}, data.SQL == horizon)
}

func (h horizonPolls) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if poll, _ := ctx.Value(pollKey{}).(bool); poll {
		select {
		case h <- struct{}{}:
		default:
		}
	}
}

// A reader held back by a running append of its own process goes on as
// soon as that append commits, not at its next look at the horizon, which
// comes up to holdBackPause later once it has waited a while (lengthened
// here, so that the two cannot be confused on a busy machine).
func TestHeldBackReaderGoesOnWhenItsProcessCommits(t *testing.T) {
	t.Parallel()
	polls := make(horizonPolls, 100)
	s := storeWith(t, pgtest.URL(t), 4, polls)
	s.maxHoldPause = time.Second
	ctx := t.Context()

	for trial := range 3 {
		held, release := make(chan struct{}), make(chan struct{})
		var taken atomic.Bool // only the first append of the trial waits
		s.beforeCommit = func(context.Context) {
			if taken.CompareAndSwap(false, true) {
				close(held)
				<-release
			}
		}
		done := make(chan error, 1)
		var committed time.Time
		go func() {
			_, err := s.Append(ctx, one("slow-"+string(rune('a'+trial)), eventstore.NoStream))
			committed = time.Now()
			done <- err
		}()
		<-held
		at, err := s.Append(ctx, one("fast-"+string(rune('a'+trial)), eventstore.NoStream))
		require.NoError(t, err)

		for len(polls) > 0 {
			<-polls
		}
		read := make(chan []eventstore.RecordedEvent, 1)
		go func() {
			evs, err := s.ReadAll(ctx, eventstore.Position{Commit: at.Position.Commit - 1}, 10)
			require.NoError(t, err)
			read <- evs
		}()
		// The pauses between looks double from 0.5 ms: after nine looks
		// (255 ms) the next is 256 ms, still within holdBackWait. The
		// append is let go to commit just after the ninth: a reader that
		// waits for its next look returns 256 ms later, one woken by the
		// commit at once, so half of that tells them apart on a busy machine.
		for range 9 {
			<-polls
		}
		close(release)
		evs := <-read
		readAt := time.Now()
		require.NoError(t, <-done)
		require.NotEmpty(t, evs, "the committed append is read once the running one has ended")
		assert.Less(t, readAt.Sub(committed), 128*time.Millisecond, "from the commit to the read")
	}
	s.beforeCommit = nil
}

// A Store's readers are woken once per commit of its own: at the commit,
// not again when its own notification comes back through its listener.
// Another Store's commits still wake them.
func TestOwnNotificationsDoNotWakeAgain(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s, other := storeAt(t, url, 4), storeAt(t, url, 4)
	ctx := t.Context()
	require.NoError(t, s.Wait(ctx, eventstore.Position{Commit: 1 << 62})) // starts the listener
	time.Sleep(100 * time.Millisecond)                                    // and lets it connect
	before := s.wakes.Load()
	const appends = 10
	for i := range appends {
		_, err := s.Append(ctx, one(fmt.Sprintf("own-%d", i), eventstore.NoStream))
		require.NoError(t, err)
	}
	time.Sleep(200 * time.Millisecond) // the notifications arrive
	assert.Equal(t, int64(appends), s.wakes.Load()-before, "wake-ups")

	before = s.wakes.Load()
	_, err := other.Append(ctx, one("other", eventstore.NoStream))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.wakes.Load() > before }, 5*time.Second, time.Millisecond,
		"another Store's commit wakes")
}
