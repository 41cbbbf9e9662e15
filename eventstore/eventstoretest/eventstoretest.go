// Package eventstoretest is the conformance suite for eventstore.Store. Every
// adapter runs it unchanged from its own tests:
//
//	func TestStore(t *testing.T) {
//		eventstoretest.Run(t, func(t *testing.T) eventstore.Store { ... })
//	}
//
// The suite never assumes an empty log: newStore may hand several subtests
// the same database, and the subtests run in parallel, each on its own
// uniquely named streams.
package eventstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
)

// promptly bounds how long a woken Wait may take. It is generous on purpose:
// the suite checks that Wait wakes, adapters check how fast.
const promptly = 3 * time.Second

// Run checks newStore's stores against the eventstore.Store contract. newStore
// is called once per subtest, from that subtest; it registers its own cleanup
// with t.Cleanup (the suite does not call Close).
func Run(t *testing.T, newStore func(t *testing.T) eventstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s eventstore.Store)
	}{
		{"AppendNoStreamCreatesStream", testAppendNoStream},
		{"AppendAtExactVersion", testAppendExactVersion},
		{"WrongVersionWritesNothing", testWrongVersionWritesNothing},
		{"AppendAnyVersion", testAppendAny},
		{"MultiStreamAppend", testMultiStreamAppend},
		{"MultiStreamAppendIsAtomic", testMultiStreamAtomic},
		{"IdempotentRetry", testIdempotentRetry},
		{"IdempotentRetryMultiStream", testIdempotentRetryMultiStream},
		{"CheckWithoutEvents", testCheck},
		{"ReadStreamFromVersion", testReadStreamFrom},
		{"ReadAllStrictlyAfterInOrder", testReadAllAfter},
		{"ReadAllLimit", testReadAllLimit},
		{"PositionsStrictlyIncrease", testPositionsIncrease},
		{"WaitReturnsWhenEventsExist", testWaitExisting},
		{"WaitWakesOnAppend", testWaitWakes},
		{"WaitReturnsOnCancel", testWaitCancel},
		{"ConcurrentAppendsOneWinnerPerVersion", testConcurrentSameStream},
		{"ConcurrentAppendersWithRetry", testConcurrentRetryLoop},
		{"ConcurrentAppendsDistinctStreams", testConcurrentDistinctStreams},
		{"InvalidRequests", testInvalid},
		{"TooLarge", testTooLarge},
		{"DataAndMetadataRoundTrip", testRoundTrip},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

// --- helpers ---------------------------------------------------------------

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// streamName is unique per call so parallel tests on one store never meet.
func streamName(prefix string) string { return prefix + "-" + uuid.NewString() }

// event builds an event the way commands stamps one. It is safe to call from
// any goroutine: it never fails a test (uuid.Must fails only when the
// system's randomness does).
func event(typ string, n int) eventstore.EventData {
	id := uuid.Must(uuid.NewV7())
	md, err := json.Marshal(eventstore.Metadata{
		EventID:       id,
		OccurredAt:    time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC),
		ActorID:       "system",
		CorrelationID: id.String(),
		SchemaVersion: 1,
	})
	if err != nil {
		panic(err) // a fixed struct of strings and a time always marshals
	}
	return eventstore.EventData{
		ID:       id,
		Type:     typ,
		Data:     json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
		Metadata: md,
	}
}

func events(n int) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = event("test.happened", i)
	}
	return out
}

func appendOK(t *testing.T, s eventstore.Store, reqs ...eventstore.AppendRequest) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctxFor(t), reqs...)
	require.NoError(t, err)
	require.Len(t, res.Versions, len(reqs))
	require.False(t, res.Position.IsZero(), "an append returns the position of its last event")
	return res
}

func readStream(t *testing.T, s eventstore.Store, stream string, from int64) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := s.ReadStream(ctxFor(t), stream, from)
	require.NoError(t, err)
	return evs
}

func ids(evs []eventstore.RecordedEvent) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func dataIDs(evs []eventstore.EventData) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func versions(evs []eventstore.RecordedEvent) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.Version
	}
	return out
}

// readAllAfter pages through the log after after until it ends, checking on
// the way that every page is in strictly increasing position order.
func readAllAfter(t *testing.T, s eventstore.Store, after eventstore.Position, page int) []eventstore.RecordedEvent {
	t.Helper()
	ctx := ctxFor(t)
	var all []eventstore.RecordedEvent
	for {
		evs, err := s.ReadAll(ctx, after, page)
		require.NoError(t, err)
		require.LessOrEqual(t, len(evs), page, "ReadAll returns at most limit events")
		for _, e := range evs {
			require.True(t, after.Less(e.Position), "position %s not after %s", e.Position, after)
			after = e.Position
		}
		all = append(all, evs...)
		if len(evs) == 0 {
			return all
		}
	}
}

// only keeps the events of the given streams, in order.
func only(evs []eventstore.RecordedEvent, streams ...string) []eventstore.RecordedEvent {
	keep := make(map[string]bool, len(streams))
	for _, s := range streams {
		keep[s] = true
	}
	var out []eventstore.RecordedEvent
	for _, e := range evs {
		if keep[e.Stream] {
			out = append(out, e)
		}
	}
	return out
}

// --- appends -----------------------------------------------------------------

func testAppendNoStream(t *testing.T, s eventstore.Store) {
	stream := streamName("new")
	evs := events(2)

	res := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: evs})
	assert.Equal(t, []int64{1}, res.Versions, "two events take versions 0 and 1")

	got := readStream(t, s, stream, 0)
	require.Len(t, got, 2)
	assert.Equal(t, dataIDs(evs), ids(got))
	assert.Equal(t, []int64{0, 1}, versions(got))
	for _, e := range got {
		assert.Equal(t, stream, e.Stream)
		assert.Equal(t, "test.happened", e.Type)
		assert.False(t, e.RecordedAt.IsZero())
	}
	assert.Equal(t, res.Position, got[1].Position, "the result is the last event's position")
	assert.True(t, got[0].Position.Less(got[1].Position))

	_, err := s.Append(ctxFor(t), eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(1)})
	assert.ErrorIs(t, err, eventstore.ErrWrongVersion, "NoStream on an existing stream")
}

func testAppendExactVersion(t *testing.T, s eventstore.Store) {
	stream := streamName("exact")
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(1)})

	res := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: 0, Events: events(3)})
	assert.Equal(t, []int64{3}, res.Versions)

	res = appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: 3, Events: events(1)})
	assert.Equal(t, []int64{4}, res.Versions)
	assert.Equal(t, []int64{0, 1, 2, 3, 4}, versions(readStream(t, s, stream, 0)))
}

func testWrongVersionWritesNothing(t *testing.T, s eventstore.Store) {
	stream := streamName("wrong")
	missing := streamName("missing")
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(2)})
	before := readStream(t, s, stream, 0)

	for _, req := range []eventstore.AppendRequest{
		{Stream: stream, Expected: 0, Events: events(1)},  // behind
		{Stream: stream, Expected: 7, Events: events(1)},  // ahead
		{Stream: missing, Expected: 0, Events: events(1)}, // stream does not exist
	} {
		_, err := s.Append(ctxFor(t), req)
		assert.ErrorIs(t, err, eventstore.ErrWrongVersion, "expected %d on %s", req.Expected, req.Stream)
	}
	assert.Equal(t, ids(before), ids(readStream(t, s, stream, 0)), "a conflict writes nothing")
	assert.Empty(t, readStream(t, s, missing, 0), "a conflict creates no stream")
}

func testAppendAny(t *testing.T, s eventstore.Store) {
	stream := streamName("any")
	res := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.Any, Events: events(1)})
	assert.Equal(t, []int64{0}, res.Versions, "Any creates a missing stream")
	res = appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.Any, Events: events(2)})
	assert.Equal(t, []int64{2}, res.Versions, "Any appends at whatever version the stream is")
	assert.Equal(t, []int64{0, 1, 2}, versions(readStream(t, s, stream, 0)))
}

func testMultiStreamAppend(t *testing.T, s eventstore.Store) {
	a, b := streamName("multi-a"), streamName("multi-b")
	appendOK(t, s, eventstore.AppendRequest{Stream: a, Expected: eventstore.NoStream, Events: events(1)})

	aEvs, bEvs := events(2), events(1)
	res := appendOK(t, s,
		eventstore.AppendRequest{Stream: a, Expected: 0, Events: aEvs},
		eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: bEvs},
	)
	assert.Equal(t, []int64{2, 0}, res.Versions, "one version per request, in request order")

	gotA, gotB := readStream(t, s, a, 1), readStream(t, s, b, 0)
	assert.Equal(t, dataIDs(aEvs), ids(gotA))
	assert.Equal(t, dataIDs(bEvs), ids(gotB))
	require.Len(t, gotB, 1)
	assert.Equal(t, res.Position, gotB[0].Position, "the result is the position of the last event written")
}

func testMultiStreamAtomic(t *testing.T, s eventstore.Store) {
	a, b, c := streamName("atomic-a"), streamName("atomic-b"), streamName("atomic-c")
	appendOK(t, s,
		eventstore.AppendRequest{Stream: a, Expected: eventstore.NoStream, Events: events(1)},
		eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: events(1)},
	)

	// Only the middle request is wrong; nothing of any request may land.
	_, err := s.Append(ctxFor(t),
		eventstore.AppendRequest{Stream: a, Expected: 0, Events: events(2)},
		eventstore.AppendRequest{Stream: b, Expected: 5, Events: events(1)},
		eventstore.AppendRequest{Stream: c, Expected: eventstore.NoStream, Events: events(1)},
	)
	require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	assert.Len(t, readStream(t, s, a, 0), 1)
	assert.Len(t, readStream(t, s, b, 0), 1)
	assert.Empty(t, readStream(t, s, c, 0))

	// The same with the bad request last, after the others were checked.
	_, err = s.Append(ctxFor(t),
		eventstore.AppendRequest{Stream: c, Expected: eventstore.NoStream, Events: events(1)},
		eventstore.AppendRequest{Stream: a, Expected: eventstore.NoStream, Events: events(1)},
	)
	require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	assert.Empty(t, readStream(t, s, c, 0))
	assert.Len(t, readStream(t, s, a, 0), 1)
}

func testIdempotentRetry(t *testing.T, s eventstore.Store) {
	stream := streamName("retry")
	req := eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(3)}
	first := appendOK(t, s, req)

	again, err := s.Append(ctxFor(t), req)
	require.NoError(t, err, "a retry is not a conflict even though the stream moved")
	assert.Equal(t, first, again, "a retry returns the first result")
	assert.Len(t, readStream(t, s, stream, 0), 3, "a retry writes nothing")

	// Still recognised after later appends moved the stream on.
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: 2, Events: events(1)})
	again, err = s.Append(ctxFor(t), req)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	assert.Len(t, readStream(t, s, stream, 0), 4)
}

func testIdempotentRetryMultiStream(t *testing.T, s eventstore.Store) {
	a, b := streamName("retry-a"), streamName("retry-b")
	appendOK(t, s, eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: events(2)})
	reqs := []eventstore.AppendRequest{
		{Stream: a, Expected: eventstore.NoStream, Events: events(2)},
		{Stream: b, Expected: 1, Events: events(1)},
	}
	first := appendOK(t, s, reqs...)
	assert.Equal(t, []int64{1, 2}, first.Versions)

	again, err := s.Append(ctxFor(t), reqs...)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	assert.Len(t, readStream(t, s, a, 0), 2)
	assert.Len(t, readStream(t, s, b, 0), 3)
}

// A request without events checks its stream's version and writes nothing:
// the append lands only where every check holds.
func testCheck(t *testing.T, s eventstore.Store) {
	checked, a, b := streamName("check"), streamName("check-a"), streamName("check-b")
	appendOK(t, s, eventstore.AppendRequest{Stream: checked, Expected: eventstore.NoStream, Events: events(2)})

	reqs := []eventstore.AppendRequest{
		{Stream: a, Expected: eventstore.NoStream, Events: events(1)},
		{Stream: checked, Expected: 1},
	}
	first := appendOK(t, s, reqs...)
	assert.Equal(t, []int64{0, 1}, first.Versions, "a check's version is the one it found")
	assert.Len(t, readStream(t, s, checked, 0), 2, "a check writes nothing")
	gotA := readStream(t, s, a, 0)
	require.Len(t, gotA, 1)
	assert.Equal(t, gotA[0].Position, first.Position)

	_, err := s.Append(ctxFor(t),
		eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: events(1)},
		eventstore.AppendRequest{Stream: checked, Expected: 0})
	require.ErrorIs(t, err, eventstore.ErrWrongVersion, "a check of a version the stream has left")
	assert.Empty(t, readStream(t, s, b, 0), "a failed check writes nothing")

	_, err = s.Append(ctxFor(t),
		eventstore.AppendRequest{Stream: checked, Expected: eventstore.NoStream},
		eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: events(1)})
	require.ErrorIs(t, err, eventstore.ErrWrongVersion, "a check that a stream does not exist, when it does")
	assert.Empty(t, readStream(t, s, b, 0))

	res := appendOK(t, s,
		eventstore.AppendRequest{Stream: streamName("check-none"), Expected: eventstore.NoStream},
		eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: events(1)})
	assert.Equal(t, []int64{eventstore.NoStream, 0}, res.Versions)

	// A retry is recognised by its events even when the checked stream
	// has moved on since.
	appendOK(t, s, eventstore.AppendRequest{Stream: checked, Expected: 1, Events: events(1)})
	again, err := s.Append(ctxFor(t), reqs...)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	assert.Len(t, readStream(t, s, a, 0), 1)

	_, err = s.Append(ctxFor(t), eventstore.AppendRequest{Stream: checked, Expected: 2})
	assert.ErrorIs(t, err, eventstore.ErrInvalid, "an append of checks only")
	assert.Len(t, readStream(t, s, checked, 0), 3)
}

// --- reads -------------------------------------------------------------------

func testReadStreamFrom(t *testing.T, s eventstore.Store) {
	stream := streamName("from")
	evs := events(5)
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: evs})

	got := readStream(t, s, stream, 2)
	assert.Equal(t, []int64{2, 3, 4}, versions(got))
	assert.Equal(t, dataIDs(evs[2:]), ids(got))
	assert.Equal(t, []int64{4}, versions(readStream(t, s, stream, 4)))
	assert.Empty(t, readStream(t, s, stream, 5), "from past the end")
	assert.Empty(t, readStream(t, s, streamName("never-written"), 0), "a missing stream has no events, and no error")
}

func testReadAllAfter(t *testing.T, s eventstore.Store) {
	a, b := streamName("all-a"), streamName("all-b")
	aEvs := events(3)
	appendOK(t, s, eventstore.AppendRequest{Stream: a, Expected: eventstore.NoStream, Events: aEvs})
	bEvs := events(2)
	appendOK(t, s, eventstore.AppendRequest{Stream: b, Expected: eventstore.NoStream, Events: bEvs})

	written := readStream(t, s, a, 0)
	require.Len(t, written, 3)
	after := written[0].Position

	got := only(readAllAfter(t, s, after, 2), a, b)
	want := append(dataIDs(aEvs[1:]), dataIDs(bEvs)...)
	assert.Equal(t, want, ids(got), "strictly after, in append order, across streams")
	for i := 1; i < len(got); i++ {
		assert.True(t, got[i-1].Position.Less(got[i].Position))
	}
	for i, e := range got[:2] {
		assert.Equal(t, written[i+1].Position, e.Position, "ReadAll and ReadStream agree on positions")
		assert.Equal(t, written[i+1].Version, e.Version)
	}

	last := got[len(got)-1].Position
	assert.Empty(t, only(readAllAfter(t, s, last, 10), a, b), "nothing of ours after our last event")
}

func testReadAllLimit(t *testing.T, s eventstore.Store) {
	stream := streamName("limit")
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(4)})
	written := readStream(t, s, stream, 0)
	require.Len(t, written, 4)

	got, err := s.ReadAll(ctxFor(t), written[0].Position, 2)
	require.NoError(t, err)
	require.Len(t, got, 2, "more than limit events follow, so exactly limit come back")
	assert.True(t, written[0].Position.Less(got[0].Position))
	assert.True(t, got[0].Position.Less(got[1].Position))
	assert.False(t, written[2].Position.Less(got[1].Position), "nothing skipped: the second is at most our third event")

	got, err = s.ReadAll(ctxFor(t), written[2].Position, 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.False(t, written[3].Position.Less(got[0].Position))
}

func testPositionsIncrease(t *testing.T, s eventstore.Store) {
	stream := streamName("positions")
	var prev eventstore.Position
	for i := range 10 {
		res := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: int64(i) - 1, Events: events(1)})
		assert.True(t, prev.Less(res.Position), "append %d: %s not after %s", i, res.Position, prev)
		prev = res.Position
	}
	got := readStream(t, s, stream, 0)
	require.Len(t, got, 10)
	for i := 1; i < len(got); i++ {
		assert.True(t, got[i-1].Position.Less(got[i].Position))
	}
}

// --- waiting -----------------------------------------------------------------

func testWaitExisting(t *testing.T, s eventstore.Store) {
	stream := streamName("wait-existing")
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(2)})
	got := readStream(t, s, stream, 0)
	require.Len(t, got, 2)

	done := make(chan error, 1)
	go func() { done <- s.Wait(ctxFor(t), got[0].Position) }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(promptly):
		t.Fatal("Wait blocked although an event after the position exists")
	}
}

func testWaitWakes(t *testing.T, s eventstore.Store) {
	stream := streamName("wait-wakes")
	head := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(1)}).Position
	ctx := ctxFor(t)
	want := event("test.awaited", 1)

	// A subscriber as the projections run it: wait, re-read, until it sees
	// the awaited event. Wait may return early; the loop absorbs that.
	seen := make(chan error, 1)
	go func() {
		after := head
		for {
			if err := s.Wait(ctx, after); err != nil {
				seen <- err
				return
			}
			evs, err := s.ReadAll(ctx, after, 100)
			if err != nil {
				seen <- err
				return
			}
			for _, e := range evs {
				if e.ID == want.ID {
					seen <- nil
					return
				}
				after = e.Position
			}
		}
	}()

	appender := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: 0, Events: []eventstore.EventData{want}})
		appender <- err
	}()
	require.NoError(t, <-appender)

	select {
	case err := <-seen:
		assert.NoError(t, err)
	case <-time.After(promptly):
		t.Fatal("the waiting reader did not see an append from another goroutine")
	}
}

func testWaitCancel(t *testing.T, s eventstore.Store) {
	stream := streamName("wait-cancel")
	head := appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: events(1)}).Position
	ctx, cancel := context.WithCancel(ctxFor(t))

	done := make(chan error, 1)
	go func() {
		after := head
		for {
			if err := s.Wait(ctx, after); err != nil {
				done <- err
				return
			}
			// Woken early or by another test's append: move on and wait again.
			evs, err := s.ReadAll(ctx, after, 100)
			if err != nil {
				done <- err
				return
			}
			if len(evs) > 0 {
				after = evs[len(evs)-1].Position
			}
		}
	}()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(promptly):
		t.Fatal("Wait did not return after its context was cancelled")
	}
}

// --- concurrency -------------------------------------------------------------

func testConcurrentSameStream(t *testing.T, s eventstore.Store) {
	const rounds, workers = 8, 6
	stream := streamName("race")
	ctx := ctxFor(t)
	var winners []uuid.UUID
	for round := range rounds {
		expected := int64(round) - 1 // NoStream in round 0
		start := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]error, workers)
		evs := make([]eventstore.EventData, workers)
		for w := range workers {
			evs[w] = event("test.raced", w)
			wg.Go(func() {
				<-start
				_, results[w] = s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: expected,
					Events: []eventstore.EventData{evs[w]}})
			})
		}
		close(start)
		wg.Wait()

		won := 0
		for w, err := range results {
			if err == nil {
				won++
				winners = append(winners, evs[w].ID)
				continue
			}
			assert.ErrorIs(t, err, eventstore.ErrWrongVersion, "round %d worker %d", round, w)
		}
		require.Equal(t, 1, won, "round %d: exactly one append at version %d wins", round, expected)
	}

	got := readStream(t, s, stream, 0)
	assert.Equal(t, winners, ids(got), "exactly the winners, in order")
	for i, e := range got {
		assert.Equal(t, int64(i), e.Version, "no duplicate or missing version")
	}
}

// testConcurrentRetryLoop runs the commands package's loop (read, append at
// the version read, retry on conflict) from several goroutines at once.
func testConcurrentRetryLoop(t *testing.T, s eventstore.Store) {
	const workers, each = 6, 5
	stream := streamName("retry-loop")
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for i := 0; i < each; {
				evs, err := s.ReadStream(ctx, stream, 0)
				if err != nil {
					errs <- err
					return
				}
				expected := eventstore.NoStream
				if len(evs) > 0 {
					expected = evs[len(evs)-1].Version
				}
				_, err = s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: expected,
					Events: []eventstore.EventData{event("test.looped", i)}})
				switch {
				case err == nil:
					i++
				case errors.Is(err, eventstore.ErrWrongVersion):
				default:
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	got := readStream(t, s, stream, 0)
	require.Len(t, got, workers*each)
	for i, e := range got {
		assert.Equal(t, int64(i), e.Version)
	}
}

func testConcurrentDistinctStreams(t *testing.T, s eventstore.Store) {
	const workers, each = 8, 10
	marker := streamName("distinct-marker")
	after := appendOK(t, s, eventstore.AppendRequest{Stream: marker, Expected: eventstore.NoStream, Events: events(1)}).Position
	ctx := ctxFor(t)

	streams := make([]string, workers)
	written := make([][]uuid.UUID, workers)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		streams[w] = streamName(fmt.Sprintf("distinct-%d", w))
		wg.Go(func() {
			for i := range each {
				e := event("test.parallel", i)
				if _, err := s.Append(ctx, eventstore.AppendRequest{Stream: streams[w], Expected: int64(i) - 1,
					Events: []eventstore.EventData{e}}); err != nil {
					errs[w] = err
					return
				}
				written[w] = append(written[w], e.ID)
			}
		})
	}
	wg.Wait()
	for w, err := range errs {
		require.NoError(t, err, "worker %d", w)
	}

	got := only(readAllAfter(t, s, after, 7), streams...)
	seen := make(map[uuid.UUID]int, workers*each)
	perStream := make(map[string][]uuid.UUID, workers)
	for _, e := range got {
		seen[e.ID]++
		perStream[e.Stream] = append(perStream[e.Stream], e.ID)
	}
	assert.Len(t, got, workers*each)
	for id, n := range seen {
		assert.Equal(t, 1, n, "event %s read %d times", id, n)
	}
	for w, stream := range streams {
		assert.Equal(t, written[w], perStream[stream], "stream %s in append order", stream)
	}
}

// --- validation ----------------------------------------------------------------

func testInvalid(t *testing.T, s eventstore.Store) {
	stream := streamName("invalid")
	noID := event("test.x", 0)
	noID.ID = uuid.Nil
	noType := event("", 0)
	dup := event("test.x", 0)

	cases := map[string][]eventstore.AppendRequest{
		"no requests":       nil,
		"empty stream name": {{Stream: "", Expected: eventstore.Any, Events: events(1)}},
		"no events":         {{Stream: stream, Expected: eventstore.Any}},
		"nil event id":      {{Stream: stream, Expected: eventstore.Any, Events: []eventstore.EventData{noID}}},
		"empty type":        {{Stream: stream, Expected: eventstore.Any, Events: []eventstore.EventData{noType}}},
		"id twice":          {{Stream: stream, Expected: eventstore.Any, Events: []eventstore.EventData{dup, dup}}},
		"bad expected":      {{Stream: stream, Expected: -3, Events: events(1)}},
		"one bad request of two": {
			{Stream: stream, Expected: eventstore.Any, Events: events(1)},
			{Stream: streamName("invalid-other"), Expected: eventstore.Any},
		},
	}
	for name, reqs := range cases {
		_, err := s.Append(ctxFor(t), reqs...)
		assert.ErrorIs(t, err, eventstore.ErrInvalid, name)
	}
	assert.Empty(t, readStream(t, s, stream, 0), "invalid appends write nothing")
}

func testTooLarge(t *testing.T, s eventstore.Store) {
	stream := streamName("large")
	big := event("test.big", 0)
	big.Data = json.RawMessage(`"` + strings.Repeat("x", 16<<20) + `"`)
	_, err := s.Append(ctxFor(t), eventstore.AppendRequest{Stream: stream, Expected: eventstore.Any,
		Events: []eventstore.EventData{big}})
	assert.ErrorIs(t, err, eventstore.ErrTooLarge, "16 MiB in one append")

	_, err = s.Append(ctxFor(t), eventstore.AppendRequest{Stream: stream, Expected: eventstore.Any,
		Events: events(10_001)})
	assert.ErrorIs(t, err, eventstore.ErrTooLarge, "10 001 events in one append")
	assert.Empty(t, readStream(t, s, stream, 0))
}

func testRoundTrip(t *testing.T, s eventstore.Store) {
	stream := streamName("bytes")
	marker := appendOK(t, s, eventstore.AppendRequest{Stream: streamName("bytes-marker"), Expected: eventstore.NoStream, Events: events(1)}).Position
	// Whitespace, key order, escapes, non-ASCII text and numbers a float64
	// would round: a store that re-encodes JSON changes these bytes.
	data := json.RawMessage("{ \"z\": 1,\n\t\"a\" : [1.0, 1e400, 12345678901234567890123],\"s\":\"é\\u00e9 \\\"q\\\" 🙂\\n\" , \"dup\":1, \"dup\":2 }")
	e := event("test.bytes", 0)
	e.Data = data
	e.Metadata = json.RawMessage(`{"event_id":"` + e.ID.String() + `",  "occurred_at":"2025-01-02T03:04:05.000006Z","actor_id":"system","schema_version":1 }`)
	appendOK(t, s, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: []eventstore.EventData{e}})

	got := readStream(t, s, stream, 0)
	require.Len(t, got, 1)
	assert.Equal(t, string(data), string(got[0].Data), "data byte for byte")
	assert.Equal(t, string(e.Metadata), string(got[0].Metadata), "metadata byte for byte")
	assert.Equal(t, e.ID, got[0].ID)
	assert.Equal(t, "test.bytes", got[0].Type)

	var md eventstore.Metadata
	require.NoError(t, json.Unmarshal(got[0].Metadata, &md))
	assert.Equal(t, e.ID, md.EventID)
	assert.Equal(t, time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), md.OccurredAt)

	all := only(readAllAfter(t, s, marker, 100), stream)
	require.Len(t, all, 1)
	assert.Equal(t, string(data), string(all[0].Data), "ReadAll returns the same bytes")
}
