package kurrentdb

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/serverfeatures"
	"github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/shared"
	v1 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	v2 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/streams"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"evident/eventstore"
)

// scripted is a gRPC server that speaks KurrentDB's protocol with canned
// answers, one handler per call a test cares about. It holds no log: it
// exists so that the real client turns real protocol answers (a conflict, a
// size limit, a missing stream, a dropped subscription) into its own error
// values and events, and the adapter's handling of those can be checked
// without a KurrentDB server.
type scripted struct {
	url  string
	stop func()

	mu       sync.Mutex
	append   func(o *v1.AppendReq_Options, msgs []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error)
	read     func(ctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error
	session  func(reqs []*v2.AppendRequest) (*v2.AppendSessionResponse, error)
	features *serverfeatures.SupportedMethods // nil: the server has no features API
	reads    []*v1.ReadReq
}

func startScripted(t *testing.T) *scripted {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return startScriptedOn(t, lis)
}

func startScriptedOn(t *testing.T, lis net.Listener) *scripted {
	t.Helper()
	srv := grpc.NewServer()
	s := &scripted{url: "kurrentdb://" + lis.Addr().String() + "?tls=false", stop: srv.Stop}
	v1.RegisterStreamsServer(srv, v1Streams{s: s})
	v2.RegisterStreamsServiceServer(srv, v2Streams{s: s})
	serverfeatures.RegisterServerFeaturesServer(srv, features{s: s})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return s
}

func (s *scripted) set(f func(s *scripted)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *scripted) readRequests() []*v1.ReadReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*v1.ReadReq(nil), s.reads...)
}

// open is a Store on the scripted server, with quick retries.
func (s *scripted) open(t *testing.T, opts Options) *Store {
	t.Helper()
	st, err := NewWithOptions(t.Context(), s.url, opts)
	require.NoError(t, err)
	st.bo = backoff{min: time.Millisecond, max: 5 * time.Millisecond}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

type v1Streams struct {
	v1.UnimplementedStreamsServer
	s *scripted
}

func (x v1Streams) Append(stream grpc.ClientStreamingServer[v1.AppendReq, v1.AppendResp]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	var msgs []*v1.AppendReq_ProposedMessage
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		msgs = append(msgs, m.GetProposedMessage())
	}
	x.s.mu.Lock()
	h := x.s.append
	x.s.mu.Unlock()
	if h == nil {
		return status.Error(codes.Unimplemented, "no append script")
	}
	resp, err := h(first.GetOptions(), msgs)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

func (x v1Streams) Read(r *v1.ReadReq, stream grpc.ServerStreamingServer[v1.ReadResp]) error {
	x.s.mu.Lock()
	x.s.reads = append(x.s.reads, r)
	h := x.s.read
	x.s.mu.Unlock()
	if h == nil {
		return nil // an empty read
	}
	return h(stream.Context(), r, stream.Send)
}

type v2Streams struct {
	v2.UnimplementedStreamsServiceServer
	s *scripted
}

func (x v2Streams) AppendSession(stream grpc.ClientStreamingServer[v2.AppendRequest, v2.AppendSessionResponse]) error {
	var reqs []*v2.AppendRequest
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, r)
	}
	x.s.mu.Lock()
	h := x.s.session
	x.s.mu.Unlock()
	if h == nil {
		return status.Error(codes.Unimplemented, "no session script")
	}
	resp, err := h(reqs)
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

type features struct {
	serverfeatures.UnimplementedServerFeaturesServer
	s *scripted
}

func (x features) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	if x.s.features == nil {
		return nil, status.Error(codes.Unimplemented, "no features API")
	}
	return x.s.features, nil
}

// withMultiStreamAppend is what a KurrentDB 25.1 server advertises.
func withMultiStreamAppend() *serverfeatures.SupportedMethods {
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: "25.1.0",
		Methods: []*serverfeatures.SupportedMethod{
			{MethodName: "appendsession", ServiceName: "kurrentdb.protocol.v2.streams.streamsservice"},
		},
	}
}

// --- answers -------------------------------------------------------------------

func recorded(stream string, rev uint64, id uuid.UUID, p eventstore.Position, typ string, data, metadata []byte) *v1.ReadResp {
	return &v1.ReadResp{Content: &v1.ReadResp_Event{Event: &v1.ReadResp_ReadEvent{
		Event: &v1.ReadResp_ReadEvent_RecordedEvent{
			Id:               &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}},
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(stream)},
			StreamRevision:   rev,
			CommitPosition:   p.Commit,
			PreparePosition:  p.Prepare,
			Metadata: map[string]string{
				"type":         typ,
				"content-type": "application/json",
				// .NET ticks (100 ns) since the Unix epoch.
				"created": strconv.FormatInt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC).UnixNano()/100, 10),
			},
			CustomMetadata: metadata,
			Data:           data,
		},
		Position: &v1.ReadResp_ReadEvent_CommitPosition{CommitPosition: p.Commit},
	}}}
}

func recordedEvent(stream string, rev uint64, id uuid.UUID, p eventstore.Position) *v1.ReadResp {
	return recorded(stream, rev, id, p, "test.happened", []byte(`{}`), []byte(`{"schema_version":1}`))
}

func confirmation() *v1.ReadResp {
	return &v1.ReadResp{Content: &v1.ReadResp_Confirmation{Confirmation: &v1.ReadResp_SubscriptionConfirmation{SubscriptionId: "sub"}}}
}

func caughtUpResp(withTimestamp bool) *v1.ReadResp {
	cu := &v1.ReadResp_CaughtUp{}
	if withTimestamp {
		cu.Timestamp = timestamppb.Now()
	}
	return &v1.ReadResp{Content: &v1.ReadResp_CaughtUp_{CaughtUp: cu}}
}

func checkpointResp(p eventstore.Position) *v1.ReadResp {
	return &v1.ReadResp{Content: &v1.ReadResp_Checkpoint_{Checkpoint: &v1.ReadResp_Checkpoint{CommitPosition: p.Commit, PreparePosition: p.Prepare}}}
}

func streamNotFound(stream string) *v1.ReadResp {
	return &v1.ReadResp{Content: &v1.ReadResp_StreamNotFound_{StreamNotFound: &v1.ReadResp_StreamNotFound{
		StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(stream)},
	}}}
}

func appended(rev uint64, p eventstore.Position) *v1.AppendResp {
	return &v1.AppendResp{Result: &v1.AppendResp_Success_{Success: &v1.AppendResp_Success{
		CurrentRevisionOption: &v1.AppendResp_Success_CurrentRevision{CurrentRevision: rev},
		PositionOption: &v1.AppendResp_Success_Position{Position: &v1.AppendResp_Position{
			CommitPosition: p.Commit, PreparePosition: p.Prepare,
		}},
	}}}
}

func appendedNoPosition(rev uint64) *v1.AppendResp {
	return &v1.AppendResp{Result: &v1.AppendResp_Success_{Success: &v1.AppendResp_Success{
		CurrentRevisionOption: &v1.AppendResp_Success_CurrentRevision{CurrentRevision: rev},
		PositionOption:        &v1.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}},
	}}}
}

func wrongExpectedVersion(current uint64) *v1.AppendResp {
	return &v1.AppendResp{Result: &v1.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: &v1.AppendResp_WrongExpectedVersion{
		CurrentRevisionOption:  &v1.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: current},
		ExpectedRevisionOption: &v1.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: 0},
	}}}
}

// streamRead answers reads of one stream from a list of its events, as
// (revision, id, position); any other stream is not found.
func streamRead(stream string, evs ...storedEvent) func(ctx context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
	return func(_ context.Context, r *v1.ReadReq, send func(*v1.ReadResp) error) error {
		o := r.GetOptions()
		name := string(o.GetStream().GetStreamIdentifier().GetStreamName())
		if name != stream {
			return send(streamNotFound(name))
		}
		from, count := o.GetStream().GetRevision(), o.GetCount()
		for _, e := range evs {
			if e.rev >= from && count > 0 {
				if err := send(recordedEvent(stream, e.rev, e.id, e.pos)); err != nil {
					return err
				}
				count--
			}
		}
		return nil
	}
}

type storedEvent struct {
	rev uint64
	id  uuid.UUID
	pos eventstore.Position
}

func eventsOf(t *testing.T, n int) []eventstore.EventData {
	t.Helper()
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = eventstore.EventData{ID: uuid.Must(uuid.NewV7()), Type: "test.happened",
			Data: []byte(fmt.Sprintf(`{"n":%d}`, i)), Metadata: []byte(`{"schema_version":1}`)}
	}
	return out
}
