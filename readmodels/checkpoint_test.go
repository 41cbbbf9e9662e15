package readmodels_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

func TestAdvanceCheckpointRefusesAMovedCheckpoint(t *testing.T) {
	eachUpdate(t, testAdvanceCheckpointRefusesAMovedCheckpoint)
}

// eachUpdate runs test on each dialect with Update and with UpdateAsync.
func eachUpdate(t *testing.T, test func(t *testing.T, dialect string, update updateFunc)) {
	eachDialect(t, func(t *testing.T, dialect string) {
		t.Run("Update", func(t *testing.T) { test(t, dialect, (*readmodels.Store).Update) })
		t.Run("UpdateAsync", func(t *testing.T) { test(t, dialect, (*readmodels.Store).UpdateAsync) })
	})
}

type updateFunc func(*readmodels.Store, context.Context, func(*readmodels.Tx) error) error

func testAdvanceCheckpointRefusesAMovedCheckpoint(t *testing.T, dialect string, update updateFunc) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	advance := func(from, to uint64, withRow bool) error {
		return update(rm, ctx, func(tx *readmodels.Tx) error {
			if withRow {
				if err := tx.InsertAudit(auditRec(to, uuid.New(), "a", "user_created", t0)); err != nil {
					return err
				}
			}
			return tx.AdvanceCheckpoint("audit", eventstore.At(from), eventstore.At(to))
		})
	}
	require.NoError(t, advance(0, 3, true), "from no checkpoint")
	assert.ErrorIs(t, advance(0, 4, true), readmodels.ErrCheckpointMoved, "someone else started it")
	assert.ErrorIs(t, advance(2, 5, true), readmodels.ErrCheckpointMoved, "a zombie's stale start")
	require.NoError(t, advance(3, 6, true))

	cp, err := rm.Checkpoint(ctx, "audit")
	require.NoError(t, err)
	assert.Equal(t, eventstore.At(6), cp)
	d, err := rm.Dump(ctx)
	require.NoError(t, err)
	assert.Len(t, d["audit"], 2, "the refused transactions left no rows")

	require.NoError(t, rm.Reset(ctx, "audit", "audit"))
	assert.ErrorIs(t, advance(6, 7, false), readmodels.ErrCheckpointMoved, "reset under the writer")
	require.NoError(t, advance(0, 1, false))
}

// AdvanceCheckpoints moves several checkpoints in one go by the same rule
// as AdvanceCheckpoint, and names every one that was not where the caller
// expected it.
func TestAdvanceCheckpointsNamesEveryMovedOne(t *testing.T) {
	eachUpdate(t, func(t *testing.T, dialect string, update updateFunc) {
		ctx := context.Background()
		rm := newStore(t, dialect)
		advance := func(moves ...readmodels.CheckpointMove) error {
			return update(rm, ctx, func(tx *readmodels.Tx) error {
				if err := tx.InsertAudit(auditRec(moves[0].To.Commit, uuid.New(), "a", "user_created", t0)); err != nil {
					return err
				}
				return tx.AdvanceCheckpoints(moves)
			})
		}
		mv := func(name string, from, to uint64) readmodels.CheckpointMove {
			return readmodels.CheckpointMove{Name: name, From: eventstore.At(from), To: eventstore.At(to)}
		}
		ch := rm.CheckpointsChanged()
		require.NoError(t, advance(mv("a", 0, 2), mv("b", 0, 2), mv("c", 0, 1)), "from no checkpoint")
		assertClosed(t, ch, time.Second)
		require.NoError(t, advance(mv("a", 2, 3), mv("b", 2, 3), mv("c", 1, 3)))

		err := advance(mv("a", 3, 4), mv("b", 2, 4), mv("c", 3, 4), mv("d", 1, 4), mv("e", 0, 4))
		require.ErrorIs(t, err, readmodels.ErrCheckpointMoved)
		var moved *readmodels.CheckpointsMovedError
		require.ErrorAs(t, err, &moved)
		assert.ElementsMatch(t, []string{"b", "d"}, moved.Names, "b is elsewhere, d has none")

		for name, want := range map[string]uint64{"a": 3, "b": 3, "c": 3, "e": 0} {
			cp, err := rm.Checkpoint(ctx, name)
			require.NoError(t, err)
			assert.Equal(t, eventstore.At(want), cp, "%s: the refused transaction moved nothing", name)
		}
		d, err := rm.Dump(ctx)
		require.NoError(t, err)
		assert.Len(t, d["audit"], 2, "the refused transaction left no rows")
	})
}

func TestCheckpointsChangedWakesOnCommit(t *testing.T) {
	eachDialect(t, testCheckpointsChangedWakesOnCommit)
}

func testCheckpointsChangedWakesOnCommit(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	assert.True(t, rm.Listening() || dialect == readmodels.DialectPostgres)

	ch := rm.CheckpointsChanged()
	require.NoError(t, rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.PutUser(readmodels.User{ID: uuid.New(), Email: "a@x.org", CreatedAt: t0, UpdatedAt: t0})
	}))
	assertOpen(t, ch, "no checkpoint written")
	_ = rm.Update(ctx, func(tx *readmodels.Tx) error {
		if err := tx.SetCheckpoint("users", eventstore.At(1)); err != nil {
			return err
		}
		return context.Canceled // roll back
	})
	assertOpen(t, ch, "rolled back")
	require.NoError(t, rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint("users", eventstore.At(1))
	}))
	assertClosed(t, ch, time.Second)
}

func assertOpen(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
		t.Error("woken: " + msg)
	default:
	}
}

func assertClosed(t *testing.T, ch <-chan struct{}, within time.Duration) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Errorf("not woken within %s", within)
	}
}

// Store.AdvanceCheckpoint, one statement outside any transaction, follows
// the same rule as Tx.AdvanceCheckpoint and wakes the waiters.
func TestStoreAdvanceCheckpoint(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		rm := newStore(t, dialect)
		ch := rm.CheckpointsChanged()
		require.NoError(t, rm.AdvanceCheckpoint(ctx, "sessions", eventstore.Position{}, eventstore.At(3)), "from no checkpoint")
		assertClosed(t, ch, time.Second)
		assert.ErrorIs(t, rm.AdvanceCheckpoint(ctx, "sessions", eventstore.Position{}, eventstore.At(4)), readmodels.ErrCheckpointMoved)
		assert.ErrorIs(t, rm.AdvanceCheckpoint(ctx, "sessions", eventstore.At(2), eventstore.At(5)), readmodels.ErrCheckpointMoved)
		require.NoError(t, rm.AdvanceCheckpoint(ctx, "sessions", eventstore.At(3), eventstore.At(6)))
		cp, err := rm.Checkpoint(ctx, "sessions")
		require.NoError(t, err)
		assert.Equal(t, eventstore.At(6), cp)
	})
}
