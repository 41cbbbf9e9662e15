package integration_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
	"evident/projections"
	"evident/readmodels"
)

// eventLog is a real SQLite file holding the event log and the read models
// (the reactor checkpoints live there).
type eventLog struct {
	es *sqlite.Store
	rm *readmodels.Store

	mu    sync.Mutex
	clock time.Time
}

func newLog(t *testing.T) *eventLog {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "evident.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	es, err := sqlite.New(db)
	require.NoError(t, err)
	t.Cleanup(func() { _ = es.Close() })
	rm, err := readmodels.Open(context.Background(), readmodels.DialectSQLite, db.Write, db.Read)
	require.NoError(t, err)
	require.NoError(t, rm.Migrate(context.Background()))
	return &eventLog{es: es, rm: rm, clock: t0}
}

// batch is events for one stream, part of one atomic append.
type batch struct {
	stream string
	events []typed
}

// appended is what a test knows about an event it wrote.
type appended struct {
	ID            uuid.UUID
	Type          string
	CorrelationID string
	OccurredAt    time.Time
}

// append writes the batches atomically and returns what it wrote, in order,
// and the position of the last event. Safe from any goroutine.
func (l *eventLog) append(ctx context.Context, bs ...batch) ([]appended, eventstore.Position, error) {
	var (
		reqs []eventstore.AppendRequest
		out  []appended
	)
	corr := uuid.NewString()
	for _, b := range bs {
		req := eventstore.AppendRequest{Stream: b.stream, Expected: eventstore.Any}
		for _, e := range b.events {
			id := uuid.Must(uuid.NewV7())
			l.mu.Lock()
			l.clock = l.clock.Add(time.Second)
			at := l.clock
			l.mu.Unlock()
			data, err := json.Marshal(e)
			if err != nil {
				return nil, eventstore.Position{}, err
			}
			md, err := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: at, ActorID: "actor-1",
				CorrelationID: corr, SchemaVersion: 1})
			if err != nil {
				return nil, eventstore.Position{}, err
			}
			req.Events = append(req.Events, eventstore.EventData{ID: id, Type: e.EventType(), Data: data, Metadata: md})
			out = append(out, appended{ID: id, Type: e.EventType(), CorrelationID: corr, OccurredAt: at})
		}
		reqs = append(reqs, req)
	}
	res, err := l.es.Append(ctx, reqs...)
	return out, res.Position, err
}

// startRunner runs a projections.Runner with only the given reactors, with
// short backoffs, until the test ends.
func startRunner(t *testing.T, l *eventLog, reactors ...projections.Reactor) *projections.Runner {
	t.Helper()
	r := projections.NewRunner(l.es, l.rm, nil, projections.Options{
		Reactors:      reactors,
		RetryDelay:    20 * time.Millisecond,
		MaxRetryDelay: 500 * time.Millisecond,
		Logger:        quiet(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return r
}

// reactorStatus is the runner's status of the named reactor.
func reactorStatus(r *projections.Runner, name string) projections.Status {
	for _, s := range r.Status() {
		if s.Name == name {
			return s
		}
	}
	return projections.Status{}
}

// waitCheckpoint waits until the reactor's checkpoint reached pos.
func waitCheckpoint(t *testing.T, r *projections.Runner, name string, pos eventstore.Position, within time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return !reactorStatus(r, name).Position.Less(pos) }, within, 10*time.Millisecond,
		"reactor %s did not reach position %s: %+v", name, pos, reactorStatus(r, name))
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// counting wraps a reactor and keeps the errors its Handle returned.
type counting struct {
	projections.Reactor
	mu     sync.Mutex
	errors []error
}

func (c *counting) Handle(ctx context.Context, ev eventstore.RecordedEvent) error {
	err := c.Reactor.Handle(ctx, ev)
	if err != nil && ctx.Err() == nil {
		c.mu.Lock()
		c.errors = append(c.errors, err)
		c.mu.Unlock()
	}
	return err
}

func (c *counting) failures() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errors...)
}
