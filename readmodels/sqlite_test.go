package readmodels_test

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

// On SQLite, UpdateAsync commits with synchronous = NORMAL (in WAL mode: no
// fsync at COMMIT), and only that transaction: the write connection is at
// FULL again for every transaction after it, and the appends that share it.
func TestSQLiteUpdateAsyncSkipsTheFsyncOfItsCommitAlone(t *testing.T) {
	t.Parallel()
	rm := newStore(t, readmodels.DialectSQLite)
	ctx := t.Context()
	const normal, full = 1, 2
	synchronous := func(async bool, name string) int {
		var v int
		update := rm.Update
		if async {
			update = rm.UpdateAsync
		}
		require.NoError(t, update(ctx, func(tx *readmodels.Tx) error {
			if err := tx.AdvanceCheckpoint(name, eventstore.Position{}, eventstore.At(1)); err != nil {
				return err
			}
			var err error
			v, err = tx.Pragma("synchronous")
			return err
		}))
		return v
	}
	assert.Equal(t, full, synchronous(false, "a"))
	assert.Equal(t, normal, synchronous(true, "b"))
	assert.Equal(t, full, synchronous(false, "c"), "back at FULL after it")
	assert.Equal(t, normal, synchronous(true, "d"))
	assert.Equal(t, full, synchronous(false, "e"))
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		cp, err := rm.Checkpoint(ctx, name)
		require.NoError(t, err)
		assert.Equal(t, eventstore.At(1), cp, name)
	}

	// A failed transaction leaves the connection at FULL too.
	require.Error(t, rm.UpdateAsync(ctx, func(tx *readmodels.Tx) error {
		return tx.AdvanceCheckpoint("b", eventstore.Position{}, eventstore.At(2))
	}))
	assert.Equal(t, full, synchronous(false, "f"))
}

// On SQLite every statement is prepared once and then reused: in later
// transactions, and for every later query on the read pool. modernc.org/sqlite
// would otherwise parse it on every call.
func TestSQLiteStatementsArePreparedOnce(t *testing.T) {
	t.Parallel()
	rm := newStore(t, readmodels.DialectSQLite)
	ctx := t.Context()
	round := func(i int) {
		u := readmodels.User{ID: uuid.New(), Email: fmt.Sprintf("u%d@x.org", i), Name: "U", Status: "pending",
			Version: 0, CreatedAt: t0, UpdatedAt: t0, Position: eventstore.At(uint64(i + 1))}
		require.NoError(t, rm.UpdateAsync(ctx, func(tx *readmodels.Tx) error {
			if err := tx.PutUser(u); err != nil {
				return err
			}
			if err := tx.InsertAudit(auditRec(uint64(i+1), u.ID, "a", "user_registered", t0)); err != nil {
				return err
			}
			return tx.AdvanceCheckpoint("users", eventstore.At(uint64(i)), eventstore.At(uint64(i+1)))
		}))
		got, err := rm.User(ctx, u.ID)
		require.NoError(t, err)
		assert.Equal(t, u.Email, got.Email)
	}
	round(0) // the first checkpoint is inserted,
	round(1) // later ones updated
	w, r := rm.Prepared()
	assert.Positive(t, w)
	assert.Positive(t, r)
	for i := 2; i < 20; i++ {
		round(i)
	}
	w2, r2 := rm.Prepared()
	assert.Equal(t, w, w2, "write statements prepared again")
	assert.Equal(t, r, r2, "read statements prepared again")
}
