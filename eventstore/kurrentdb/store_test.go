package kurrentdb

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	v1 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	v2 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/streams"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"evident/eventstore"
)

// --- connecting ----------------------------------------------------------------

func TestNewFailsClearlyWhenNothingListens(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())

	start := time.Now()
	_, err = NewWithOptions(t.Context(), "kurrentdb://admin:s3cret@"+addr+"?tls=true&tlsVerifyCert=false", Options{ConnectTimeout: 5 * time.Second})
	require.Error(t, err)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	assert.Contains(t, err.Error(), "cannot reach kurrentdb://admin:xxxxx@"+addr)
	assert.NotContains(t, err.Error(), "s3cret")
	assert.Less(t, time.Since(start), 6*time.Second, "the wait is bounded")
}

func TestNewFailsClearlyWhenTheServerIsSilent(t *testing.T) {
	t.Parallel()
	// Accepts connections and never answers: a hung server, or TLS
	// expected where there is none.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 100)
	t.Cleanup(func() {
		_ = lis.Close()
		for {
			select {
			case c := <-accepted:
				_ = c.Close()
			default:
				return
			}
		}
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default:
				_ = c.Close()
			}
		}
	}()

	start := time.Now()
	_, err = NewWithOptions(t.Context(), "kurrentdb://"+lis.Addr().String()+"?tls=false", Options{ConnectTimeout: 300 * time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	assert.Contains(t, err.Error(), "waited at most 300ms")
	assert.Less(t, time.Since(start), 3*time.Second, "the wait is bounded by ConnectTimeout")

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = New(ctx, "kurrentdb://"+lis.Addr().String()+"?tls=false")
	require.Error(t, err)
	assert.Less(t, time.Since(start), 3*time.Second, "and by the caller's ctx")
}

func TestNewRejectsBadInputBeforeAnyIO(t *testing.T) {
	t.Parallel()
	_, err := New(t.Context(), "postgres://localhost/evident")
	assert.ErrorContains(t, err, "scheme")
	_, err = NewWithOptions(t.Context(), "kurrentdb://localhost:1?tls=false", Options{StreamRegex: "x", StreamPrefixes: []string{"y-"}})
	assert.ErrorContains(t, err, "exclusive")
}

func TestNewChecksTheServerAnswers(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	reads := srv.readRequests()
	require.Len(t, reads, 1)
	o := reads[0].GetOptions()
	assert.NotNil(t, o.GetAll(), "the check reads $all, which ReadAll and Wait need too")
	assert.Equal(t, v1.ReadReq_Options_Backwards, o.GetReadDirection())
	assert.Equal(t, uint64(1), o.GetCount())
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close twice is harmless")
	_, err := s.ReadStream(t.Context(), "user-1", 0)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable, "a closed store")

	denied := startScripted(t)
	denied.set(func(s *scripted) {
		s.read = func(context.Context, *v1.ReadReq, func(*v1.ReadResp) error) error {
			return status.Error(codes.PermissionDenied, "Access Denied")
		}
	})
	_, err = New(t.Context(), denied.url)
	require.Error(t, err)
	assert.NotErrorIs(t, err, eventstore.ErrUnavailable, "a refusal is not an outage")
	assert.Contains(t, err.Error(), "credentials")
}

// --- appending -------------------------------------------------------------------

func TestAppendSendsJSONAtTheExpectedRevisionAndTakesTheEventsOwnPosition(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	evs := eventsOf(t, 2)
	evs[1].Metadata = json.RawMessage("{ \"schema_version\" : 1 }")

	var gotOpts *v1.AppendReq_Options
	var gotMsgs []*v1.AppendReq_ProposedMessage
	srv.set(func(s *scripted) {
		s.append = func(o *v1.AppendReq_Options, msgs []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			gotOpts, gotMsgs = o, msgs
			// The position of the write as a whole, not of its last event.
			return appended(4, eventstore.At(400)), nil
		}
		s.read = streamRead("user-1",
			storedEvent{3, evs[0].ID, eventstore.Position{Commit: 480, Prepare: 480}},
			storedEvent{4, evs[1].ID, eventstore.Position{Commit: 520, Prepare: 510}})
	})

	res, err := s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: 2, Events: evs})
	require.NoError(t, err)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.Position{Commit: 520, Prepare: 510}, Versions: []int64{4}}, res,
		"the last event's own position, as ReadAll and ReadStream will hand it out")

	assert.Equal(t, "user-1", string(gotOpts.GetStreamIdentifier().GetStreamName()))
	assert.Equal(t, uint64(2), gotOpts.GetRevision(), "expected version 2 is revision 2")
	require.Len(t, gotMsgs, 2)
	for i, m := range gotMsgs {
		assert.Equal(t, "application/json", m.GetMetadata()["content-type"])
		assert.Equal(t, "test.happened", m.GetMetadata()["type"])
		assert.Equal(t, []byte(evs[i].Data), m.GetData(), "data byte for byte")
		assert.Equal(t, []byte(evs[i].Metadata), m.GetCustomMetadata(), "metadata byte for byte")
	}

	for exp, want := range map[int64]string{eventstore.NoStream: "no_stream", eventstore.Any: "any"} {
		srv.set(func(s *scripted) {
			s.append = func(o *v1.AppendReq_Options, _ []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
				gotOpts = o
				return appended(1, eventstore.At(10)), nil
			}
		})
		_, _ = s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: exp, Events: evs})
		switch want {
		case "no_stream":
			assert.NotNil(t, gotOpts.GetNoStream())
		case "any":
			assert.NotNil(t, gotOpts.GetAny())
		}
	}
}

func TestAppendRecognisedRetryAnsweredWithSuccess(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	evs := eventsOf(t, 2)
	other := uuid.New()
	srv.set(func(s *scripted) {
		// The stream has moved on since the first attempt; the server
		// recognises the retry by its ids, says so without a position,
		// and reports the stream's current revision.
		s.append = func(*v1.AppendReq_Options, []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			return appendedNoPosition(2), nil
		}
		s.read = streamRead("user-1",
			storedEvent{0, evs[0].ID, eventstore.At(100)},
			storedEvent{1, evs[1].ID, eventstore.At(200)},
			storedEvent{2, other, eventstore.At(300)})
	})
	res, err := s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream, Events: evs})
	require.NoError(t, err)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(200), Versions: []int64{1}}, res, "the first attempt's result")
}

func TestAppendConflictThatIsARetry(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	evs := eventsOf(t, 2)
	srv.set(func(s *scripted) {
		s.append = func(*v1.AppendReq_Options, []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			return wrongExpectedVersion(5), nil
		}
	})
	req := eventstore.AppendRequest{Stream: "user-1", Expected: 0, Events: evs}

	// Written earlier at revisions 1 and 2: the earlier result.
	srv.set(func(s *scripted) {
		s.read = streamRead("user-1",
			storedEvent{0, uuid.New(), eventstore.At(50)},
			storedEvent{1, evs[0].ID, eventstore.At(100)},
			storedEvent{2, evs[1].ID, eventstore.At(200)})
	})
	res, err := s.Append(t.Context(), req)
	require.NoError(t, err)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(200), Versions: []int64{2}}, res)

	// The first id there, the second not: reused ids, a caller's bug.
	srv.set(func(s *scripted) {
		s.read = streamRead("user-1", storedEvent{1, evs[0].ID, eventstore.At(100)}, storedEvent{2, uuid.New(), eventstore.At(200)})
	})
	_, err = s.Append(t.Context(), req)
	assertOnly(t, err, eventstore.ErrInvalid, "partial reuse")

	// Someone else's events: a plain conflict.
	srv.set(func(s *scripted) {
		s.read = streamRead("user-1", storedEvent{1, uuid.New(), eventstore.At(100)})
	})
	_, err = s.Append(t.Context(), req)
	assertOnly(t, err, eventstore.ErrWrongVersion, "conflict")

	// With Any there is nowhere to look.
	_, err = s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.Any, Events: evs})
	assertOnly(t, err, eventstore.ErrWrongVersion, "conflict with Any")
}

func TestAppendSuccessWhoseEventIsNotThere(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	srv.set(func(s *scripted) {
		s.append = func(*v1.AppendReq_Options, []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			return appended(0, eventstore.At(10)), nil
		}
		s.read = streamRead("user-1", storedEvent{0, uuid.New(), eventstore.At(10)})
	})
	_, err := s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream, Events: eventsOf(t, 1)})
	require.Error(t, err, "never report a write that cannot be found")
	assert.Contains(t, err.Error(), "is not there")
}

func TestAppendValidation(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{MaxAppendBytes: 1000})
	var calls atomic.Int32
	srv.set(func(s *scripted) {
		s.append = func(*v1.AppendReq_Options, []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			calls.Add(1)
			return appended(0, eventstore.At(1)), nil
		}
	})
	one := eventsOf(t, 1)
	big := eventsOf(t, 1)
	big[0].Data = bytes.Repeat([]byte("x"), 1001)
	for name, tc := range map[string]struct {
		reqs []eventstore.AppendRequest
		want error
	}{
		"system stream":     {[]eventstore.AppendRequest{{Stream: "$et-x", Expected: eventstore.Any, Events: one}}, eventstore.ErrInvalid},
		"same stream twice": {[]eventstore.AppendRequest{{Stream: "user-1", Expected: 0, Events: eventsOf(t, 1)}, {Stream: "user-1", Expected: 1, Events: eventsOf(t, 1)}}, eventstore.ErrInvalid},
		"over the bytes":    {[]eventstore.AppendRequest{{Stream: "user-1", Expected: eventstore.Any, Events: big}}, eventstore.ErrTooLarge},
		"over the events":   {[]eventstore.AppendRequest{{Stream: "user-1", Expected: eventstore.Any, Events: eventsOf(t, MaxAppendEvents+1)}}, eventstore.ErrTooLarge},
		"no id":             {[]eventstore.AppendRequest{{Stream: "user-1", Expected: eventstore.Any, Events: make([]eventstore.EventData, 1)}}, eventstore.ErrInvalid},
	} {
		_, err := s.Append(t.Context(), tc.reqs...)
		assertOnly(t, err, tc.want, name)
	}
	assert.Zero(t, calls.Load(), "nothing invalid reaches the server")
}

func TestMultiStreamAppend(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	srv.set(func(s *scripted) { s.features = withMultiStreamAppend() })
	s := srv.open(t, Options{})
	user, email := eventsOf(t, 2), eventsOf(t, 1)
	user[0].Metadata = json.RawMessage(`{"schema_version":1, "actor_id":"system"}`)

	var got []*v2.AppendRequest
	srv.set(func(s *scripted) {
		s.session = func(reqs []*v2.AppendRequest) (*v2.AppendSessionResponse, error) {
			got = reqs
			return &v2.AppendSessionResponse{
				Output: []*v2.AppendResponse{
					{Stream: "email-ann@example.org", StreamRevision: 0},
					{Stream: "user-1", StreamRevision: 1},
				},
				Position: 700,
			}, nil
		}
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			switch string(r.GetOptions().GetStream().GetStreamIdentifier().GetStreamName()) {
			case "user-1":
				return streamRead("user-1", storedEvent{0, user[0].ID, eventstore.At(600)}, storedEvent{1, user[1].ID, eventstore.At(650)})(sctx, r, send)
			default:
				return streamRead("email-ann@example.org", storedEvent{0, email[0].ID, eventstore.At(700)})(sctx, r, send)
			}
		}
	})
	res, err := s.Append(t.Context(),
		eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream, Events: user},
		eventstore.AppendRequest{Stream: "email-ann@example.org", Expected: eventstore.NoStream, Events: email},
	)
	require.NoError(t, err)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(700), Versions: []int64{1, 0}}, res,
		"versions in request order, the position of the last event written")

	require.Len(t, got, 2)
	assert.Equal(t, "user-1", got[0].GetStream())
	assert.Equal(t, int64(-1), got[0].GetExpectedRevision(), "NoStream")
	require.Len(t, got[0].GetRecords(), 2)
	rec := got[0].GetRecords()[0]
	assert.Equal(t, user[0].ID.String(), rec.GetRecordId(), "the event id, for the server's deduplication")
	assert.Equal(t, "test.happened", rec.GetSchema().GetName())
	assert.Equal(t, v2.SchemaFormat_SCHEMA_FORMAT_JSON, rec.GetSchema().GetFormat())
	assert.Equal(t, []byte(user[0].Data), rec.GetData())
	assert.Equal(t, string(user[0].Metadata), rec.GetProperties()[metadataKey].GetStringValue(), "metadata travels whole, byte for byte")
}

// --- reading -------------------------------------------------------------------

func TestReadStream(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	srv.set(func(s *scripted) {
		s.read = streamRead("user-1",
			storedEvent{0, ids[0], eventstore.At(10)},
			storedEvent{1, ids[1], eventstore.Position{Commit: 30, Prepare: 20}},
			storedEvent{2, ids[2], eventstore.At(40)})
	})
	evs, err := s.ReadStream(t.Context(), "user-1", 1)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	assert.Equal(t, ids[1], evs[0].ID)
	assert.Equal(t, int64(1), evs[0].Version)
	assert.Equal(t, "user-1", evs[0].Stream)
	assert.Equal(t, "test.happened", evs[0].Type)
	assert.Equal(t, eventstore.Position{Commit: 30, Prepare: 20}, evs[0].Position)
	assert.Equal(t, json.RawMessage(`{"schema_version":1}`), evs[0].Metadata)
	assert.Equal(t, time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), evs[0].RecordedAt)

	last := srv.readRequests()
	o := last[len(last)-1].GetOptions()
	assert.Equal(t, uint64(1), o.GetStream().GetRevision())
	assert.Equal(t, v1.ReadReq_Options_Forwards, o.GetReadDirection())

	evs, err = s.ReadStream(t.Context(), "user-1", -5)
	require.NoError(t, err)
	assert.Len(t, evs, 3, "a negative from reads from the start")

	evs, err = s.ReadStream(t.Context(), "user-missing", 0)
	require.NoError(t, err, "a missing stream is no error")
	assert.Empty(t, evs)

	_, err = s.ReadStream(t.Context(), "", 0)
	assert.ErrorIs(t, err, eventstore.ErrInvalid)
}

func TestReadStreamErrorIsNeverTheEnd(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	srv.set(func(s *scripted) {
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			if err := send(recordedEvent("user-1", 0, uuid.New(), eventstore.At(10))); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "node is shutting down")
		}
	})
	evs, err := s.ReadStream(t.Context(), "user-1", 0)
	assertOnly(t, err, eventstore.ErrUnavailable, "a read cut short")
	assert.Nil(t, evs, "no partial stream: a command would decide on it")
}

func TestReadAllThroughAFilteredSubscription(t *testing.T) {
	t.Parallel()
	for _, withTimestamp := range []bool{true, false} {
		srv := startScripted(t)
		s := srv.open(t, Options{})
		a, b := uuid.New(), uuid.New()
		srv.set(func(s *scripted) {
			s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
				for _, m := range []*v1.ReadResp{
					confirmation(),
					recordedEvent("user-1", 3, uuid.New(), eventstore.At(100)), // at after
					recorded("user-1", 4, uuid.New(), eventstore.At(150), "$streamDeleted", nil, nil),
					recordedEvent("user-1", 5, a, eventstore.At(200)),
					checkpointResp(eventstore.At(250)),
					recordedEvent("session-9", 0, b, eventstore.At(300)),
					caughtUpResp(withTimestamp),
					recordedEvent("user-1", 6, uuid.New(), eventstore.At(400)),
				} {
					if err := send(m); err != nil {
						return err
					}
				}
				<-sctx.Done() // a subscription stays open
				return nil
			}
		})
		evs, err := s.ReadAll(t.Context(), eventstore.At(100), 10)
		require.NoError(t, err)
		require.Len(t, evs, 2, "strictly after, no system events, up to caught-up")
		assert.Equal(t, a, evs[0].ID)
		assert.Equal(t, b, evs[1].ID)

		reads := srv.readRequests()
		o := reads[len(reads)-1].GetOptions()
		assert.NotNil(t, o.GetSubscription(), "a catch-up subscription")
		assert.Equal(t, uint64(100), o.GetAll().GetPosition().GetCommitPosition(), "from the stored position")
		assert.Equal(t, []string{"user-", "session-", "email-"}, o.GetFilter().GetStreamIdentifier().GetPrefix(), "filtered by the server")
	}
}

func TestReadAllLimitAndErrors(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{StreamRegex: "^[^$]"})
	srv.set(func(s *scripted) {
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			_ = send(confirmation())
			_ = send(recordedEvent("order-1", 0, uuid.New(), eventstore.At(10)))
			_ = send(recordedEvent("order-2", 0, uuid.New(), eventstore.At(20)))
			return status.Error(codes.Unavailable, "gone")
		}
	})
	evs, err := s.ReadAll(t.Context(), eventstore.Position{}, 1)
	require.NoError(t, err)
	require.Len(t, evs, 1, "limit")
	reads := srv.readRequests()
	o := reads[len(reads)-1].GetOptions()
	assert.NotNil(t, o.GetAll().GetStart(), "the zero position reads from the start")
	assert.Equal(t, "^[^$]", o.GetFilter().GetStreamIdentifier().GetRegex())

	_, err = s.ReadAll(t.Context(), eventstore.Position{}, 10)
	assertOnly(t, err, eventstore.ErrUnavailable, "a dropped read is an error, not the end")

	_, err = s.ReadAll(t.Context(), eventstore.Position{}, 0)
	assert.ErrorIs(t, err, eventstore.ErrInvalid)
}

// --- waiting and subscribing ---------------------------------------------------

func TestWaitThroughTheClient(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	release := make(chan struct{})
	srv.set(func(s *scripted) {
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			_ = send(confirmation())
			_ = send(recordedEvent("user-1", 0, uuid.New(), eventstore.At(100)))
			_ = send(caughtUpResp(true))
			<-release
			return send(recordedEvent("user-1", 1, uuid.New(), eventstore.At(200)))
		}
	})
	done := make(chan error, 1)
	go func() { done <- s.Wait(t.Context(), eventstore.At(100)) }()
	select {
	case <-done:
		t.Fatal("Wait returned before an event after its position existed")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not wake")
	}

	ctx, cancel := context.WithCancel(t.Context())
	srv.set(func(s *scripted) {
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			_ = send(confirmation())
			<-sctx.Done()
			return nil
		}
	})
	go func() { done <- s.Wait(ctx, eventstore.At(100)) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait ignored its context")
	}

	srv.set(func(s *scripted) {
		s.read = func(_ context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			_ = send(confirmation())
			return status.Error(codes.Unavailable, "node stopping")
		}
	})
	err := s.Wait(t.Context(), eventstore.At(100))
	assertOnly(t, err, eventstore.ErrUnavailable, "Wait reports an outage rather than hiding it")
}

func TestSubscribeResubscribesThroughTheClient(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	var attempt atomic.Int32
	srv.set(func(s *scripted) {
		s.read = func(sctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			_ = send(confirmation())
			switch attempt.Add(1) {
			case 1:
				_ = send(recordedEvent("user-1", 0, ids[0], eventstore.At(100)))
				_ = send(recordedEvent("user-1", 1, ids[1], eventstore.At(200)))
				return status.Error(codes.Unavailable, "leader changed")
			case 2:
				return status.Error(codes.Unavailable, "not ready")
			default:
				_ = send(recordedEvent("user-1", 1, ids[1], eventstore.At(200))) // again
				_ = send(caughtUpResp(false))
				_ = send(recordedEvent("user-1", 2, ids[2], eventstore.At(300)))
				<-sctx.Done()
				return nil
			}
		}
	})

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []uuid.UUID
	err := s.Subscribe(ctx, eventstore.Position{}, func(_ context.Context, e eventstore.RecordedEvent) error {
		got = append(got, e.ID)
		if e.ID == ids[2] {
			cancel()
		}
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, ids, got, "each event once, in order, across two drops")

	var from []eventstore.Position
	for _, r := range srv.readRequests()[1:] { // the first is New's check
		p := r.GetOptions().GetAll().GetPosition()
		from = append(from, eventstore.Position{Commit: p.GetCommitPosition(), Prepare: p.GetPreparePosition()})
	}
	assert.Equal(t, []eventstore.Position{{}, eventstore.At(200), eventstore.At(200)}, from,
		"resubscribed from the last event handled")
}

// The client closes itself for good when, after losing its server, a new
// discovery finds none; the Store then starts a new client, so that the
// service recovers when the server is back.
func TestStoreRecoversFromAClientThatClosedItself(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	srv := startScriptedOn(t, lis)
	s := srv.open(t, Options{})
	srv.stop()

	// The first failure sends the client to rediscover; the discovery
	// fails (nothing listens) and the client closes itself.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.ReadStream(t.Context(), "user-1", 0)
		require.Error(t, err)
		require.ErrorIs(t, err, eventstore.ErrUnavailable)
		if isClosedErr(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The server is back on the same address.
	lis, err = net.Listen("tcp", addr)
	require.NoError(t, err)
	back := startScriptedOn(t, lis)
	id := uuid.New()
	back.set(func(s *scripted) { s.read = streamRead("user-1", storedEvent{0, id, eventstore.At(1)}) })
	require.Eventually(t, func() bool {
		evs, err := s.ReadStream(t.Context(), "user-1", 0)
		return err == nil && len(evs) == 1 && evs[0].ID == id
	}, 30*time.Second, 100*time.Millisecond, "the store works again once the server is back")
}

func isClosedErr(err error) bool {
	return strings.Contains(err.Error(), "ErrorCodeConnectionClosed") || strings.Contains(err.Error(), "connection is closed") ||
		strings.Contains(err.Error(), "maximum discovery attempt")
}

// A request without events is a check, made by reading the stream just
// before the write (the server's appends take no request without records):
// the write goes out only where the stream is at the version expected.
func TestAppendCheckReadsBeforeItWrites(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})
	evs := eventsOf(t, 1)
	userRead := streamRead("user-1",
		storedEvent{0, uuid.New(), eventstore.At(10)},
		storedEvent{1, uuid.New(), eventstore.At(20)},
		storedEvent{2, uuid.New(), eventstore.At(30)})
	var written []string
	srv.set(func(s *scripted) {
		s.append = func(o *v1.AppendReq_Options, _ []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
			written = append(written, string(o.GetStreamIdentifier().GetStreamName()))
			return appended(0, eventstore.At(40)), nil
		}
		sessionRead := streamRead("session-1", storedEvent{0, evs[0].ID, eventstore.At(40)})
		s.read = func(ctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
			if string(r.GetOptions().GetStream().GetStreamIdentifier().GetStreamName()) == "user-1" {
				return userRead(ctx, r, send)
			}
			return sessionRead(ctx, r, send)
		}
	})
	session := eventstore.AppendRequest{Stream: "session-1", Expected: eventstore.NoStream, Events: evs}

	res, err := s.Append(t.Context(), session, eventstore.AppendRequest{Stream: "user-1", Expected: 2})
	require.NoError(t, err)
	assert.Equal(t, eventstore.AppendResult{Position: eventstore.At(40), Versions: []int64{0, 2}}, res)
	assert.Equal(t, []string{"session-1"}, written, "the check's stream is read, not written")

	other := eventstore.AppendRequest{Stream: "session-2", Expected: eventstore.NoStream, Events: eventsOf(t, 1)}
	for _, exp := range []int64{1, eventstore.NoStream, 3} {
		_, err = s.Append(t.Context(), other, eventstore.AppendRequest{Stream: "user-1", Expected: exp})
		assert.ErrorIs(t, err, eventstore.ErrWrongVersion, "user-1 is at 2, not %d", exp)
	}
	assert.Equal(t, []string{"session-1"}, written, "a failed check writes nothing")

	_, err = s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: 2})
	assert.ErrorIs(t, err, eventstore.ErrInvalid, "checks only")
}
