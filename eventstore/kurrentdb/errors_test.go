package kurrentdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	v1 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v1/streams"
	streamerrors "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/errors"
	v2 "github.com/kurrent-io/KurrentDB-Client-Go/protos/kurrentdb/protocols/v2/streams/streams"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"evident/eventstore"
)

var sentinels = []error{eventstore.ErrWrongVersion, eventstore.ErrTooLarge, eventstore.ErrInvalid, eventstore.ErrUnavailable}

// assertOnly checks that err is want (nil: none of the sentinels) and no other sentinel.
func assertOnly(t *testing.T, err error, want error, msg string) {
	t.Helper()
	require.Error(t, err, msg)
	for _, s := range sentinels {
		if s == want {
			assert.ErrorIs(t, err, s, msg)
		} else {
			assert.NotErrorIs(t, err, s, msg)
		}
	}
}

// The client's *Error has unexported fields; FromError is the one exported
// way to build one, and it wraps anything as ErrorCodeUnknown, which is
// what the client also does with a status it has no code for.
func TestMapErrorOfConstructedClientErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	unknown := func(err error) error {
		e, _ := kurrentdb.FromError(err)
		return e
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"max append size (single-stream append)", unknown(status.Error(codes.InvalidArgument, "Maximum Append Size of 1048576 Exceeded.")), eventstore.ErrTooLarge},
		{"max event size", unknown(status.Error(codes.InvalidArgument, "Event with Id: x, Size: 9, exceeds Maximum Append Event Size of 8.")), eventstore.ErrTooLarge},
		{"other bad argument", unknown(status.Error(codes.InvalidArgument, "Trying to read from an invalid position.")), nil},
		{"unavailable status", unknown(status.Error(codes.Unavailable, "Server Is Not Ready")), eventstore.ErrUnavailable},
		{"plain unknown", unknown(errors.New("boom")), nil},
		{"wrapped by the client", fmt.Errorf("could not construct append operation. Reason: %w", unknown(status.Error(codes.Unavailable, "x"))), eventstore.ErrUnavailable},
		{"not the client's", errors.New("event metadata must be a valid JSON map[string]string"), nil},
		{"server ended the call", io.EOF, eventstore.ErrUnavailable},
	} {
		assertOnly(t, mapError(ctx, "op", tc.err), tc.want, tc.name)
	}
}

func TestMapErrorKeepsContextErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A cancelled call surfaces as a status, not as ctx's error.
	e, _ := kurrentdb.FromError(status.Error(codes.Canceled, "context canceled"))
	err := mapError(ctx, "read", e)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, eventstore.ErrUnavailable, "a caller's cancellation is not an outage")

	err = mapError(context.Background(), "read", fmt.Errorf("x: %w", context.DeadlineExceeded))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Nil(t, mapError(ctx, "read", nil))
}

// The rest of the client's codes come out of its own handling of protocol
// answers, which a scripted server provides.
func TestAppendMapsServerErrors(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	s := srv.open(t, Options{})

	for _, tc := range []struct {
		name     string
		answer   func() (*v1.AppendResp, error)
		want     error
		contains string
	}{
		{"wrong expected version", func() (*v1.AppendResp, error) { return wrongExpectedVersion(3), nil }, eventstore.ErrWrongVersion, ""},
		{"maximum append size", func() (*v1.AppendResp, error) {
			return nil, status.Error(codes.InvalidArgument, "Maximum Append Size of 1048576 Exceeded.")
		}, eventstore.ErrTooLarge, ""},
		{"server not ready", func() (*v1.AppendResp, error) { return nil, status.Error(codes.Unavailable, "Server Is Not Ready") }, eventstore.ErrUnavailable, ""},
		{"commit timeout", func() (*v1.AppendResp, error) {
			return nil, status.Error(codes.Aborted, "Operation timed out: Commit phase timeout.")
		}, eventstore.ErrUnavailable, ""},
		{"server deadline", func() (*v1.AppendResp, error) { return nil, status.Error(codes.DeadlineExceeded, "slow") }, eventstore.ErrUnavailable, ""},
		{"access denied", func() (*v1.AppendResp, error) { return nil, status.Error(codes.PermissionDenied, "Access Denied") }, nil, "credentials"},
		{"unauthenticated", func() (*v1.AppendResp, error) { return nil, status.Error(codes.Unauthenticated, "Bad credentials") }, nil, "credentials"},
		{"internal", func() (*v1.AppendResp, error) { return nil, status.Error(codes.Internal, "oops") }, nil, "oops"},
	} {
		srv.set(func(s *scripted) {
			s.append = func(*v1.AppendReq_Options, []*v1.AppendReq_ProposedMessage) (*v1.AppendResp, error) {
				return tc.answer()
			}
			s.read = nil // nothing in the stream: a conflict is no retry
		})
		_, err := s.Append(t.Context(), eventstore.AppendRequest{Stream: "user-1", Expected: 2, Events: eventsOf(t, 1)})
		assertOnly(t, err, tc.want, tc.name)
		assert.Contains(t, err.Error(), tc.contains, tc.name)
		assert.Contains(t, err.Error(), `append to "user-1"`, tc.name)
	}
}

func TestMultiStreamAppendMapsServerErrors(t *testing.T) {
	t.Parallel()
	srv := startScripted(t)
	srv.set(func(s *scripted) { s.features = withMultiStreamAppend() })
	s := srv.open(t, Options{})

	detailed := func(c codes.Code, msg string, detail *streamerrors.StreamRevisionConflictErrorDetails) error {
		st, err := status.New(c, msg).WithDetails(detail)
		require.NoError(t, err)
		return st.Err()
	}
	sized := func() error {
		st, err := status.New(codes.Aborted, "too big").WithDetails(&streamerrors.AppendTransactionSizeExceededErrorDetails{Size: 9, MaxSize: 8})
		require.NoError(t, err)
		return st.Err()
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"revision conflict", detailed(codes.FailedPrecondition, "conflict", &streamerrors.StreamRevisionConflictErrorDetails{Stream: "email-x", ExpectedRevision: -1, ActualRevision: 0}), eventstore.ErrWrongVersion},
		{"transaction too large", sized(), eventstore.ErrTooLarge},
		{"unavailable", status.Error(codes.Unavailable, "down"), eventstore.ErrUnavailable},
	} {
		srv.set(func(s *scripted) {
			s.session = func([]*v2.AppendRequest) (*v2.AppendSessionResponse, error) { return nil, tc.err }
			s.read = nil
		})
		_, err := s.Append(t.Context(),
			eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream, Events: eventsOf(t, 1)},
			eventstore.AppendRequest{Stream: "email-x", Expected: eventstore.NoStream, Events: eventsOf(t, 1)},
		)
		assertOnly(t, err, tc.want, tc.name)
	}
}

func TestMultiStreamAppendOnAnOlderServer(t *testing.T) {
	t.Parallel()
	srv := startScripted(t) // no features API: EventStoreDB before 21.10, or any server without AppendSession
	s := srv.open(t, Options{})
	_, err := s.Append(t.Context(),
		eventstore.AppendRequest{Stream: "user-1", Expected: eventstore.NoStream, Events: eventsOf(t, 1)},
		eventstore.AppendRequest{Stream: "email-x", Expected: eventstore.NoStream, Events: eventsOf(t, 1)},
	)
	assertOnly(t, err, eventstore.ErrInvalid, "multi-stream append on a server without it")
	assert.ErrorIs(t, err, ErrMultiStreamUnsupported)
	assert.Contains(t, err.Error(), "25.1")
}
