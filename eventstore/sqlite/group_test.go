package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
)

// holdWriter takes the write pool's only connection, as a read-model
// transaction would, so that appends queue behind it; the returned func
// gives it back.
func holdWriter(t *testing.T, db *sqlitedb.DB) (release func()) {
	t.Helper()
	conn, err := db.Write.Conn(t.Context())
	require.NoError(t, err)
	var once sync.Once
	release = func() { once.Do(func() { assert.NoError(t, conn.Close()) }) }
	t.Cleanup(release)
	return release
}

// waitQueued waits until n Append calls are queued.
func waitQueued(t *testing.T, s *sqlite.Store, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return sqlite.Queued(s) == n }, 5*time.Second, time.Millisecond,
		"%d appends queued, want %d", sqlite.Queued(s), n)
}

type appended struct {
	res eventstore.AppendResult
	err error
}

// appendAsync starts one Append and waits until it is queued behind the
// n-1 before it, so that calls queue in the order they are started.
func appendAsync(t *testing.T, ctx context.Context, s *sqlite.Store, n int, reqs ...eventstore.AppendRequest) <-chan appended {
	t.Helper()
	done := make(chan appended, 1)
	go func() {
		res, err := s.Append(ctx, reqs...)
		done <- appended{res, err}
	}()
	waitQueued(t, s, n)
	return done
}

func result(t *testing.T, c <-chan appended) appended {
	t.Helper()
	select {
	case a := <-c:
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("Append did not return")
		return appended{}
	}
}

// TestConcurrentAppendsShareOneCommit: appends that queue while the writer
// is busy are committed in one transaction, and each gets its own result.
func TestConcurrentAppendsShareOneCommit(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	release := holdWriter(t, db)

	const n = 20
	results := make([]<-chan appended, n)
	streams := make([]string, n)
	for i := range n {
		streams[i] = fmt.Sprintf("s-%d", i)
		results[i] = appendAsync(t, ctx, s, i+1,
			eventstore.AppendRequest{Stream: streams[i], Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x"), ev("y")}})
	}
	before := sqlite.Commits(s)
	release()

	positions := map[eventstore.Position]bool{}
	for i := range n {
		a := result(t, results[i])
		require.NoError(t, a.err)
		assert.Equal(t, []int64{1}, a.res.Versions)
		positions[a.res.Position] = true
		evs, err := s.ReadStream(ctx, streams[i], 0)
		require.NoError(t, err)
		require.Len(t, evs, 2)
		assert.Equal(t, a.res.Position, evs[1].Position, "each caller gets the position of its own last event")
		assert.Equal(t, eventstore.At(uint64(2*i+1)), evs[0].Position, "the group keeps arrival order")
	}
	assert.Len(t, positions, n)
	assert.Equal(t, uint64(1), sqlite.Commits(s)-before, "one transaction for the whole group")
}

// TestFaultInGroupFailsAlone: in one group, the calls that conflict or reuse
// an event id fail and write nothing, their neighbours commit, and a later
// call sees an earlier one's write.
func TestFaultInGroupFailsAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	_, err := s.Append(ctx, eventstore.AppendRequest{Stream: "s", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
	release := holdWriter(t, db)

	first := ev("first")
	ok1 := appendAsync(t, ctx, s, 1, eventstore.AppendRequest{Stream: "s", Expected: 0, Events: []eventstore.EventData{first}})
	// Expected 0 too, but the call before it moved s to 1.
	stale := appendAsync(t, ctx, s, 2, eventstore.AppendRequest{Stream: "s", Expected: 0, Events: []eventstore.EventData{ev("stale")}})
	ok2 := appendAsync(t, ctx, s, 3, eventstore.AppendRequest{Stream: "c", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	// Writes stream d, then fails on s: d must be rolled back with it.
	partial := appendAsync(t, ctx, s, 4,
		eventstore.AppendRequest{Stream: "d", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}},
		eventstore.AppendRequest{Stream: "s", Expected: 5, Events: []eventstore.EventData{ev("x")}})
	// Inserts one event, then fails on the unique event id of ok1's.
	reused := appendAsync(t, ctx, s, 5, eventstore.AppendRequest{Stream: "e", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x"), first}})
	ok3 := appendAsync(t, ctx, s, 6, eventstore.AppendRequest{Stream: "s", Expected: 1, Events: []eventstore.EventData{ev("x")}})
	before := sqlite.Commits(s)
	release()

	a := result(t, ok1)
	require.NoError(t, a.err)
	assert.Equal(t, []int64{1}, a.res.Versions)
	assert.ErrorIs(t, result(t, stale).err, eventstore.ErrWrongVersion)
	a = result(t, ok2)
	require.NoError(t, a.err)
	assert.Equal(t, []int64{0}, a.res.Versions)
	assert.ErrorIs(t, result(t, partial).err, eventstore.ErrWrongVersion)
	assert.ErrorIs(t, result(t, reused).err, eventstore.ErrInvalid)
	a = result(t, ok3)
	require.NoError(t, a.err)
	assert.Equal(t, []int64{2}, a.res.Versions, "sees the write of the call before it in the group")
	assert.Equal(t, uint64(1), sqlite.Commits(s)-before)

	for stream, want := range map[string]int{"s": 3, "c": 1, "d": 0, "e": 0} {
		evs, err := s.ReadStream(ctx, stream, 0)
		require.NoError(t, err)
		assert.Len(t, evs, want, stream)
	}
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
}

// TestRetryInsideGroup: a client retry queued in the same group as its
// first attempt gets the first attempt's result and writes nothing.
func TestRetryInsideGroup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	release := holdWriter(t, db)

	reqs := []eventstore.AppendRequest{
		{Stream: "a", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x"), ev("y")}},
		{Stream: "b", Expected: eventstore.Any, Events: []eventstore.EventData{ev("z")}},
	}
	// Any passes the version check, so this retry is caught at its insert.
	anyReq := eventstore.AppendRequest{Stream: "c", Expected: eventstore.Any, Events: []eventstore.EventData{ev("x"), ev("y")}}
	firstC := appendAsync(t, ctx, s, 1, reqs...)
	retryC := appendAsync(t, ctx, s, 2, reqs...)
	anyC := appendAsync(t, ctx, s, 3, anyReq)
	anyRetryC := appendAsync(t, ctx, s, 4, anyReq)
	before := sqlite.Commits(s)
	release()

	anyFirst, anyRetry := result(t, anyC), result(t, anyRetryC)
	require.NoError(t, anyFirst.err)
	require.NoError(t, anyRetry.err)
	assert.Equal(t, anyFirst.res, anyRetry.res)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(5), Versions: []int64{1}}, anyFirst.res)

	first, retry := result(t, firstC), result(t, retryC)
	require.NoError(t, first.err)
	require.NoError(t, retry.err)
	assert.Equal(t, first.res, retry.res)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(3), Versions: []int64{1, 0}}, first.res)
	assert.Equal(t, uint64(1), sqlite.Commits(s)-before)
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(5), n)
}

// TestCancelledWhileQueuedWritesNothing: a caller whose context ends before
// its group begins gets ctx's error, and its events are never written.
func TestCancelledWhileQueuedWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	release := holdWriter(t, db)

	cctx, cancel := context.WithCancel(ctx)
	gone := appendAsync(t, cctx, s, 1, eventstore.AppendRequest{Stream: "gone", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	cancel()
	a := result(t, gone)
	require.ErrorIs(t, a.err, context.Canceled)
	assert.NotErrorIs(t, a.err, eventstore.ErrWrongVersion)

	kept := appendAsync(t, ctx, s, 2, eventstore.AppendRequest{Stream: "kept", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	release()
	require.NoError(t, result(t, kept).err)

	evs, err := s.ReadStream(ctx, "gone", 0)
	require.NoError(t, err)
	assert.Empty(t, evs, "the cancelled append was never written")
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	assert.Zero(t, sqlite.Queued(s))

	// A group whose every caller left commits nothing.
	release = holdWriter(t, db)
	cctx, cancel = context.WithCancel(ctx)
	gone = appendAsync(t, cctx, s, 1, eventstore.AppendRequest{Stream: "gone", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	cancel()
	require.ErrorIs(t, result(t, gone).err, context.Canceled)
	before := sqlite.Commits(s)
	release()
	require.Eventually(t, func() bool { return sqlite.Queued(s) == 0 }, 5*time.Second, time.Millisecond)
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "after", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), sqlite.Commits(s)-before, "only the later append committed")
	evs, err = s.ReadStream(ctx, "gone", 0)
	require.NoError(t, err)
	assert.Empty(t, evs)
}

// TestCloseDrainsQueuedAppends: Close waits for queued appends to commit
// and refuses later ones.
func TestCloseDrainsQueuedAppends(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "events.db"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	s, err := sqlite.New(db)
	require.NoError(t, err)
	release := holdWriter(t, db)

	queued := make([]<-chan appended, 5)
	for i := range queued {
		queued[i] = appendAsync(t, ctx, s, i+1, eventstore.AppendRequest{Stream: fmt.Sprint(i), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	require.Eventually(t, func() bool { return sqlite.Closed(s) }, 5*time.Second, time.Millisecond)
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "late", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	select {
	case <-closed:
		t.Fatal("Close returned before the queued appends were done")
	case <-time.After(50 * time.Millisecond):
	}
	release()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	for _, c := range queued {
		require.NoError(t, result(t, c).err)
	}
	var n int64
	require.NoError(t, db.Read.QueryRowContext(ctx, `SELECT COUNT(*) FROM events`).Scan(&n))
	assert.Equal(t, int64(5), n)

	// Reads, on statements prepared by the store, still work after Close.
	evs, err := s.ReadStream(ctx, "0", 0)
	require.NoError(t, err)
	assert.Len(t, evs, 1)
	all, err := s.ReadAll(ctx, eventstore.Position{}, 10)
	require.NoError(t, err)
	assert.Len(t, all, 5)
	assert.NoError(t, s.Wait(ctx, eventstore.Position{}))
}

// TestManyWritersFewerCommits: unforced, 16 writers already share commits,
// and every acknowledged append is in the file after it is reopened.
func TestManyWritersFewerCommits(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "events.db")
	db, err := sqlitedb.Open(path)
	require.NoError(t, err)
	s, err := sqlite.New(db)
	require.NoError(t, err)

	const writers, each = 16, 30
	var (
		mu    sync.Mutex
		acked = map[uuid.UUID]eventstore.AppendResult{}
		wg    sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			stream := fmt.Sprint("w-", w)
			for i := range each {
				e := ev("x")
				res, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: int64(i) - 1, Events: []eventstore.EventData{e}})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				acked[e.ID] = res
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	commits := sqlite.Commits(s)
	t.Logf("%d appends in %d commits", writers*each, commits)
	assert.Less(t, commits, uint64(writers*each), "concurrent appends share transactions")
	require.NoError(t, s.Close())
	require.NoError(t, db.Close())

	_, s = open(t, path)
	checkAcked(t, s, acked)
	n, err := s.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(writers*each), n)
}

func checkAcked(t *testing.T, s *sqlite.Store, acked map[uuid.UUID]eventstore.AppendResult) {
	t.Helper()
	all, err := s.ReadAll(t.Context(), eventstore.Position{}, 1<<20)
	require.NoError(t, err)
	byID := make(map[uuid.UUID]eventstore.RecordedEvent, len(all))
	for _, e := range all {
		byID[e.ID] = e
	}
	for id, res := range acked {
		e, ok := byID[id]
		if !assert.True(t, ok, "acknowledged event %s is missing", id) {
			continue
		}
		assert.Equal(t, res.Position, e.Position)
		assert.Equal(t, res.Versions[0], e.Version)
	}
}

// TestAckedAppendsSurviveKill appends from 8 writers in a child process,
// which prints each acknowledged event, kills it with SIGKILL mid-stream,
// and checks that every acknowledged event is in the file.
func TestAckedAppendsSurviveKill(t *testing.T) {
	if path := os.Getenv("EVIDENT_SQLITE_KILL_CHILD"); path != "" {
		killChild(path)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	path := filepath.Join(t.TempDir(), "events.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAckedAppendsSurviveKill$")
	cmd.Env = append(os.Environ(), "EVIDENT_SQLITE_KILL_CHILD="+path)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	acked := map[uuid.UUID]eventstore.AppendResult{}
	lines := bufio.NewScanner(out)
	for lines.Scan() && len(acked) < 300 {
		var (
			id     string
			pos, v uint64
		)
		if _, err := fmt.Sscanf(lines.Text(), "ack %s %d %d", &id, &pos, &v); err != nil {
			continue // the test binary's own output
		}
		acked[uuid.MustParse(id)] = eventstore.AppendResult{Position: eventstore.At(pos), Versions: []int64{int64(v)}}
	}
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	require.Len(t, acked, 300, "the child acknowledged appends")

	_, s := open(t, path)
	checkAcked(t, s, acked)
}

// killChild appends until it is killed, printing "ack id position version"
// for every append that returned success.
func killChild(path string) {
	db, err := sqlitedb.Open(path)
	if err != nil {
		panic(err)
	}
	s, err := sqlite.New(db)
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	for i := range 8 {
		go func() {
			for j := int64(-1); ; j++ {
				e := eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "x", Data: []byte(`{}`), Metadata: []byte(`{}`)}
				res, err := s.Append(context.Background(), eventstore.AppendRequest{Stream: fmt.Sprint("k-", i), Expected: j, Events: []eventstore.EventData{e}})
				if err != nil {
					panic(err)
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %s %d %d\n", e.ID, res.Position.Commit, res.Versions[0])
				_ = w.Flush()
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestGroupFailureRetriesEachAlone: an error that is not an append's own
// fault ends the group's transaction (RAISE(ROLLBACK) here rolls back the
// whole of it, as SQLite does on some I/O errors); the group is then retried
// call by call, so the failing call fails alone and its neighbours, whose
// first writes were lost with the transaction, still commit.
func TestGroupFailureRetriesEachAlone(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, s := open(t, filepath.Join(t.TempDir(), "events.db"))
	_, err := db.Write.ExecContext(ctx, `CREATE TRIGGER poison BEFORE INSERT ON events
		WHEN NEW.stream = 'poison' BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END`)
	require.NoError(t, err)
	release := holdWriter(t, db)

	before := appendAsync(t, ctx, s, 1, eventstore.AppendRequest{Stream: "before", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	poison := appendAsync(t, ctx, s, 2, eventstore.AppendRequest{Stream: "poison", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	after := appendAsync(t, ctx, s, 3, eventstore.AppendRequest{Stream: "after", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	commits := sqlite.Commits(s)
	release()

	require.NoError(t, result(t, before).err)
	perr := result(t, poison).err
	require.Error(t, perr)
	assert.ErrorContains(t, perr, "poisoned")
	assert.NotErrorIs(t, perr, eventstore.ErrWrongVersion)
	assert.NotErrorIs(t, perr, eventstore.ErrInvalid)
	require.NoError(t, result(t, after).err)
	assert.Equal(t, uint64(2), sqlite.Commits(s)-commits, "the two good calls, each alone")

	for stream, want := range map[string]int{"before": 1, "poison": 0, "after": 1} {
		evs, err := s.ReadStream(ctx, stream, 0)
		require.NoError(t, err)
		assert.Len(t, evs, want, stream)
	}
	// The write connection is clean: the next append works.
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: "later", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("x")}})
	require.NoError(t, err)
}
