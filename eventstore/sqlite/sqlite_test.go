package sqlite_test

import (
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/eventstoretest"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
)

// Each subtest gets its own file, as a fresh embedded install would.
func TestConformance(t *testing.T) {
	t.Parallel()
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		_, s := open(t, filepath.Join(t.TempDir(), "events.db"))
		return s
	})
}

// TestConformanceSharedFile runs the suite with every subtest on one file, so
// the tests meet each other's events and appends, as production callers do.
func TestConformanceSharedFile(t *testing.T) {
	t.Parallel()
	db, _ := open(t, filepath.Join(t.TempDir(), "events.db"))
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		s, err := sqlite.New(db)
		require.NoError(t, err)
		return s
	})
}

func open(t *testing.T, path string) (*sqlitedb.DB, *sqlite.Store) {
	t.Helper()
	db, err := sqlitedb.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	s, err := sqlite.New(db)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return db, s
}

func ev(typ string) eventstore.EventData {
	return eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: typ, Data: json.RawMessage(`{}`), Metadata: json.RawMessage(`{}`)}
}

func TestNewMigratesOnceAndLeavesDBOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)

	again, err := sqlite.New(db)
	require.NoError(t, err, "a second New on a migrated file")
	n, err := again.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "migrating again keeps the log")

	var version int64
	require.NoError(t, db.Read.QueryRowContext(ctx, `SELECT MAX(version_id) FROM goose_eventstore`).Scan(&version))
	assert.Equal(t, int64(1), version)

	require.NoError(t, s.Close())
	require.NoError(t, again.Close())
	assert.NoError(t, db.Write.PingContext(ctx), "Close leaves the caller's DB open")
	assert.NoError(t, db.Read.PingContext(ctx))
}

func TestCountAndReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")

	db, err := sqlitedb.Open(path)
	require.NoError(t, err)
	s, err := sqlite.New(db)
	require.NoError(t, err)
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	res, err := s.Append(ctx,
		eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x"), ev("y")}},
		eventstore.AppendRequest{Stream: "b", Expected: eventstore.Any, Events: []eventstore.EventData{ev("z")}},
	)
	require.NoError(t, err)
	assert.Equal(t, eventstore.At(3), res.Position, "positions start at 1 on an empty log")
	require.NoError(t, s.Close())
	require.NoError(t, db.Close())

	_, s = open(t, path)
	n, err = s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), n, "the log survives closing the file")
	all, err := s.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, eventstore.At(1), all[0].Position)
	assert.WithinDuration(t, time.Now(), all[0].RecordedAt, time.Minute)
	assert.Equal(t, time.UTC, all[0].RecordedAt.Location())
}

// TestWaitIsWokenNotPolled checks that an append in this process wakes a
// blocked Wait well before the fallback poll would.
func TestWaitIsWokenNotPolled(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	res, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)

	returned := make(chan time.Time, 1)
	go func() {
		assert.NoError(t, s.Wait(ctx, res.Position))
		returned <- time.Now()
	}()
	// Give Wait time to block. Should it not have yet, it returns at once
	// after the append, which passes too; only a missed wake-up (falling back
	// to the poll, 500 ms after Wait began) fails.
	time.Sleep(50 * time.Millisecond)
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: 0, Events: []eventstore.EventData{ev("y")}})
	require.NoError(t, err)
	appended := time.Now()

	select {
	case at := <-returned:
		assert.Less(t, at.Sub(appended), 250*time.Millisecond)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return")
	}
}

// TestWaitSeesAnotherProcess: a second handle on the file stands in for the
// CLI; its append is seen through the fallback poll.
func TestWaitSeesAnotherProcess(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	_, server := open(t, path)
	_, cli := open(t, path)

	done := make(chan error, 1)
	go func() { done <- server.Wait(ctx, eventstore.Position{}) }()
	_, err := cli.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait never noticed another process's append")
	}
	all, err := server.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	assert.Len(t, all, 1)
}

// TestLockedFileIsUnavailable holds the write lock from another connection,
// as another process would, and checks the error callers get.
func TestLockedFileIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	_, _ = open(t, path) // creates the file and its schema

	// The same pools sqlitedb opens, but giving up at once on a lock.
	impatient := func(extra string) *sql.DB {
		db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(0)&_pragma=journal_mode(WAL)"+extra)
		require.NoError(t, err)
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { assert.NoError(t, db.Close()) })
		return db
	}
	s, err := sqlite.New(&sqlitedb.DB{Write: impatient("&_txlock=immediate"), Read: impatient(""), Path: path})
	require.NoError(t, err)

	holder := impatient("&_txlock=immediate")
	tx, err := holder.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })

	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.Any, Events: []eventstore.EventData{ev("x")}})
	require.Error(t, err)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	assert.NotErrorIs(t, err, eventstore.ErrWrongVersion)

	// WAL: readers are not blocked by the writer.
	evs, err := s.ReadStream(ctx, "a", 0)
	require.NoError(t, err)
	assert.Empty(t, evs)

	require.NoError(t, tx.Rollback())
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.Any, Events: []eventstore.EventData{ev("x")}})
	assert.NoError(t, err, "the same append succeeds once the lock is gone")
}

// TestReusedEventIDIsInvalid: an event id already in the log in an append
// that is not a retry of the one that wrote it is a caller bug, not a retry.
func TestReusedEventIDIsInvalid(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	first, second := ev("x"), ev("y")
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{first, second}})
	require.NoError(t, err)

	for name, req := range map[string]eventstore.AppendRequest{
		"first id reused, rest differs": {Stream: "a", Expected: eventstore.Any, Events: []eventstore.EventData{first, ev("z")}},
		"first id reused, other stream": {Stream: "b", Expected: eventstore.Any, Events: []eventstore.EventData{first, second}},
		"later id reused":               {Stream: "a", Expected: eventstore.Any, Events: []eventstore.EventData{ev("z"), second}},
	} {
		_, err := s.Append(ctx, req)
		assert.ErrorIs(t, err, eventstore.ErrInvalid, name)
	}
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, s := open(t, filepath.Join(t.TempDir(), "events.db"))

	evs := make([]eventstore.EventData, sqlite.MaxAppendEvents)
	for i := range evs {
		evs[i] = ev("x")
	}
	res, err := s.Append(ctx, eventstore.AppendRequest{Stream: "max", Expected: eventstore.NoStream, Events: evs})
	require.NoError(t, err, "exactly the limit is allowed")
	assert.Equal(t, []int64{sqlite.MaxAppendEvents - 1}, res.Versions)

	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "over", Expected: eventstore.NoStream, Events: append(evs, ev("x"))})
	assert.ErrorIs(t, err, eventstore.ErrTooLarge)

	_, err = s.ReadAll(ctx, eventstore.Position{}, 0)
	assert.ErrorIs(t, err, eventstore.ErrInvalid, "a limit below one")
}

// ReadStream does not read the stream column back: every event it returns
// names the stream with the caller's string, not with a copy per event (a
// hot stream is read whole after every conflict). ReadAll reads it.
func TestReadStreamSharesTheCallersStreamName(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream,
		Events: []eventstore.EventData{ev("a"), ev("b"), ev("c")}})
	require.NoError(t, err)

	name := strings.Clone("user-1")
	evs, err := s.ReadStream(ctx, name, 0)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	for i, e := range evs {
		assert.Equal(t, int64(i), e.Version)
		assert.Same(t, unsafe.StringData(name), unsafe.StringData(e.Stream), "event %d has its own copy of the name", i)
	}
	all, err := s.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	require.Len(t, all, 3)
	for _, e := range all {
		assert.Equal(t, "user-1", e.Stream)
	}
}
