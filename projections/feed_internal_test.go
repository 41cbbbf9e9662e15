package projections

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
)

// waitCounter is the real event store, counting Waits.
type waitCounter struct {
	Source
	waits atomic.Int64
}

func (w *waitCounter) Wait(ctx context.Context, after eventstore.Position) error {
	w.waits.Add(1)
	return w.Source.Wait(ctx, after)
}

// At the head the feed reads before it waits: when the next events are
// there already (the usual case under load), it reads them with no Wait,
// whose look at the log would be a round trip of its own on PostgreSQL.
func TestFeedReadsBeforeItWaitsAtTheHead(t *testing.T) {
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "evident.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	es, err := sqlite.New(db)
	require.NoError(t, err)
	t.Cleanup(func() { _ = es.Close() })
	ctx := context.Background()
	appendOne := func() {
		id := uuid.Must(uuid.NewV7())
		_, err := es.Append(ctx, eventstore.AppendRequest{Stream: "s-" + id.String(), Expected: eventstore.Any,
			Events: []eventstore.EventData{{ID: id, Type: "t", Data: []byte(`{}`), Metadata: []byte(`{}`)}}})
		require.NoError(t, err)
	}
	src := &waitCounter{Source: es}
	f := &feed{src: src, limit: 10, keep: 2, flights: map[eventstore.Position]*flight{}}

	appendOne()
	evs, err := f.next(ctx, eventstore.Position{})
	require.NoError(t, err)
	require.Len(t, evs, 1, "a short read: the feed is at the head")
	appendOne()
	evs, err = f.next(ctx, evs[0].Position)
	require.NoError(t, err)
	assert.Len(t, evs, 1)
	assert.Zero(t, src.waits.Load(), "waits")
}
