package readmodels_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
	"evident/readmodels"
)

// tripTracer counts what a pool sends, pg_notify (the notifier's, after the
// commit) left out: statements one by one, and batches.
type tripTracer struct {
	mu         sync.Mutex
	statements []string
	batches    int
}

func (r *tripTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(data.SQL, "pg_notify") {
		r.mu.Lock()
		r.statements = append(r.statements, data.SQL)
		r.mu.Unlock()
	}
	return ctx
}

func (*tripTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (r *tripTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.mu.Lock()
	r.batches++
	r.mu.Unlock()
	return ctx
}

func (*tripTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (*tripTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (r *tripTracer) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statements, r.batches = nil, 0
}

func (r *tripTracer) counts() (statements []string, batches int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.statements...), r.batches
}

// batchedStore is a migrated PostgreSQL Store on a pool of one connection
// (so that a connection a transaction left in a bad state is the next
// one's), reporting to a tripTracer.
func batchedStore(t *testing.T) (*readmodels.Store, *tripTracer) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.URL(t))
	require.NoError(t, err)
	cfg.MaxConns = 1
	tr := &tripTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	rm, err := readmodels.Open(context.Background(), readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rm.Close() })
	require.NoError(t, rm.Migrate(context.Background()))
	return rm, tr
}

func newUser(name string, version int64) readmodels.User {
	return readmodels.User{ID: uuid.New(), Email: name + "@x.org", Name: name, Status: "pending",
		Version: version, CreatedAt: t0, UpdatedAt: t0, Position: eventstore.At(uint64(version))}
}

// A batched transaction that only writes, as a projection's batch does,
// costs one round trip: BEGIN, the checkpoint move, the rows and COMMIT go
// to the server together.
func TestUpdateAsyncIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	rm, tr := batchedStore(t)
	ctx := context.Background()
	require.NoError(t, rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint("users", eventstore.At(1))
	}))
	u := newUser("ann", 2)
	tr.reset()
	require.NoError(t, rm.UpdateAsync(ctx, func(tx *readmodels.Tx) error {
		if err := tx.AdvanceCheckpoints([]readmodels.CheckpointMove{{Name: "users", From: eventstore.At(1), To: eventstore.At(2)}}); err != nil {
			return err
		}
		if err := tx.InsertAudit(auditRec(2, u.ID, "a", "user_created", t0)); err != nil {
			return err
		}
		return tx.PutUser(u)
	}))
	statements, batches := tr.counts()
	assert.Equal(t, 1, batches, "batches sent")
	assert.Empty(t, statements, "statements sent on their own")

	cp, err := rm.Checkpoint(ctx, "users")
	require.NoError(t, err)
	assert.Equal(t, eventstore.At(2), cp)
	got, err := rm.User(ctx, u.ID)
	require.NoError(t, err)
	assert.Equal(t, "ann", got.Name)
}

// A read in a batched transaction sees the writes made before it.
func TestUpdateAsyncReadsSeeEarlierWrites(t *testing.T) {
	t.Parallel()
	rm, _ := batchedStore(t)
	u := newUser("bea", 1)
	require.NoError(t, rm.UpdateAsync(context.Background(), func(tx *readmodels.Tx) error {
		if err := tx.PutUser(u); err != nil {
			return err
		}
		got, err := tx.User(u.ID)
		if err != nil {
			return err
		}
		assert.Equal(t, "bea", got.Name)
		got.Name, got.Version = "bea2", 2
		return tx.PutUser(got)
	}))
	got, err := rm.User(context.Background(), u.ID)
	require.NoError(t, err)
	assert.Equal(t, "bea2", got.Name)
}

// A write the server refuses fails the whole batched transaction with
// ErrBatched, after its method returned nil: nothing is committed, and the
// connection is fit for the next transaction.
func TestUpdateAsyncWriteFailureCommitsNothing(t *testing.T) {
	t.Parallel()
	rm, _ := batchedStore(t)
	ctx := context.Background()
	good, bad := newUser("cid", 1), newUser("nul\x00", 1) // PostgreSQL text holds no NUL
	for _, readAfter := range []bool{false, true} {
		err := rm.UpdateAsync(ctx, func(tx *readmodels.Tx) error {
			require.NoError(t, tx.PutUser(good))
			require.NoError(t, tx.PutUser(bad), "queued, not sent")
			require.NoError(t, tx.AdvanceCheckpoint("users", eventstore.Position{}, eventstore.At(1)))
			if readAfter {
				_, err := tx.User(good.ID) // sends the batch, which fails
				return err
			}
			return nil
		})
		require.ErrorIs(t, err, readmodels.ErrBatched, "read after: %v", readAfter)
		assert.NotErrorIs(t, err, readmodels.ErrUnavailable)
		assert.NotErrorIs(t, err, readmodels.ErrCheckpointMoved)

		_, err = rm.User(ctx, good.ID)
		assert.ErrorIs(t, err, readmodels.ErrNotFound, "nothing committed")
		cp, err := rm.Checkpoint(ctx, "users")
		require.NoError(t, err)
		assert.True(t, cp.IsZero(), "checkpoint not moved")
	}
	require.NoError(t, rm.UpdateAsync(ctx, func(tx *readmodels.Tx) error {
		if err := tx.PutUser(good); err != nil {
			return err
		}
		return tx.AdvanceCheckpoint("users", eventstore.Position{}, eventstore.At(1))
	}), "the connection is out of the failed transaction")
	_, err := rm.User(ctx, good.ID)
	require.NoError(t, err)
}
