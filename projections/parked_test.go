package projections_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetryAndSkipParked(t *testing.T) { eachDialect(t, testRetryAndSkipParked) }

func testRetryAndSkipParked(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	id := uuid.New()
	e.append(t, userStream(id), user.Created{UserID: id, Email: "r@x.org", Name: "R"})
	poison := e.all(t)[0]
	var broken atomic.Bool
	broken.Store(true)
	f := &flaky{Projection: projections.Audit(), fail: func(ev eventstore.RecordedEvent) error {
		if ev.ID == poison.ID && broken.Load() {
			return errors.New("cannot digest")
		}
		return nil
	}}
	fr := &failingReactor{}
	opts := fast(1)
	opts.Reactors = []projections.Reactor{fr}
	r, _ := e.start(t, []projections.Projection{f}, opts)
	last := e.append(t, userStream(id), user.Deleted{UserID: id, DeletedBy: "admin"})
	waitFor(t, r, last)
	require.Eventually(t, func() bool { return checkpoint(t, e, "failing") == last }, 10*time.Second, 5*time.Millisecond)
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 2, "the audit's poison and the workflow's")

	err = r.RetryParked(ctx, "audit", poison.ID.String())
	require.ErrorIs(t, err, projections.ErrStillFailing)
	assert.Equal(t, 1, auditCount(t, e), "still parked, nothing applied")

	broken.Store(false)
	require.NoError(t, r.RetryParked(ctx, "audit", poison.ID.String()))
	assert.Equal(t, 2, auditCount(t, e), "the retried event is projected")
	err = r.RetryParked(ctx, "audit", poison.ID.String())
	assert.ErrorIs(t, err, readmodels.ErrNotFound, "unparked once")

	deleted := parkedOf(t, e, "failing")
	require.NoError(t, r.SkipParked(ctx, "failing", deleted))
	parked, err = e.rm.Parked(ctx)
	require.NoError(t, err)
	assert.Empty(t, parked)
	for _, s := range r.Status() {
		assert.Zero(t, s.Parked, s.Name)
	}
	assert.ErrorIs(t, r.SkipParked(ctx, "nonesuch", deleted), projections.ErrUnknownWorker)
}

func parkedOf(t *testing.T, e *env, name string) string {
	t.Helper()
	parked, err := e.rm.Parked(context.Background())
	require.NoError(t, err)
	for _, p := range parked {
		if p.Projection == name {
			return p.EventID
		}
	}
	t.Fatalf("nothing parked for %s", name)
	return ""
}
