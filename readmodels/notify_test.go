package readmodels_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
	"evident/readmodels"
)

// notifyTracer watches the pg_notify statements a pool sends: how many, and
// whether any was sent inside a transaction. Until release is closed, each
// one waits there (at most a few seconds), as a slow server would.
type notifyTracer struct {
	mu      sync.Mutex
	sent    int
	inTx    int
	release chan struct{}
}

func (n *notifyTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !strings.Contains(data.SQL, "pg_notify") {
		return ctx
	}
	n.mu.Lock()
	n.sent++
	if conn.PgConn().TxStatus() != 'I' {
		n.inTx++
	}
	release := n.release
	n.mu.Unlock()
	select {
	case <-release:
	case <-time.After(3 * time.Second):
	}
	return ctx
}

func (*notifyTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (n *notifyTracer) counts() (sent, inTx int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sent, n.inTx
}

// tracedStore opens a Store on url whose pool reports to tr.
func tracedStore(t *testing.T, url string, tr *notifyTracer) *readmodels.Store {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 4
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	rm, err := readmodels.Open(context.Background(), readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rm.Close() })
	return rm
}

// A checkpoint NOTIFY inside the transaction would hold PostgreSQL's
// cluster-wide notify lock until the commit is flushed; it is sent after
// the commit, and still heard by another process.
func TestCheckpointNotifyIsSentAfterTheCommit(t *testing.T) {
	t.Parallel()
	in := instances(t, 1)
	listener := in[0].rm
	tr := &notifyTracer{release: make(chan struct{})}
	close(tr.release)
	writer := tracedStore(t, in[0].url, tr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = listener.Listen(ctx) }()
	require.Eventually(t, listener.Listening, 5*time.Second, 10*time.Millisecond)

	ch := listener.CheckpointsChanged()
	require.NoError(t, writer.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint("users", eventstore.At(3))
	}))
	assertClosed(t, ch, 2*time.Second)
	sent, inTx := tr.counts()
	assert.Equal(t, 1, sent)
	assert.Zero(t, inTx, "NOTIFY sent inside a transaction")
}

// Commits while a NOTIFY is on its way share the next one; Close stops the
// notifier.
func TestCheckpointNotifiesAreCoalescedAndStopWithClose(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	tr := &notifyTracer{release: make(chan struct{})}
	rm := tracedStore(t, url, tr)
	require.NoError(t, rm.Migrate(context.Background()))
	ctx := context.Background()
	commit := func(pos uint64) {
		require.NoError(t, rm.Update(ctx, func(tx *readmodels.Tx) error {
			return tx.SetCheckpoint("users", eventstore.At(pos))
		}))
	}

	commit(1)
	require.Eventually(t, func() bool { s, _ := tr.counts(); return s == 1 }, 2*time.Second, time.Millisecond,
		"the first NOTIFY is on its way")
	for i := range 10 {
		commit(uint64(i + 2)) // each returns at once: nothing waits for the NOTIFY held up above
	}
	close(tr.release)
	require.Eventually(t, func() bool { s, _ := tr.counts(); return s == 2 }, 2*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	sent, inTx := tr.counts()
	assert.Equal(t, 2, sent, "ten commits behind one NOTIFY share the next")
	assert.Zero(t, inTx)

	require.NoError(t, rm.Close())
	require.NoError(t, rm.Close(), "twice is harmless")
	commit(20)
	time.Sleep(50 * time.Millisecond)
	sent, _ = tr.counts()
	assert.Equal(t, 2, sent, "no NOTIFY after Close")
}
