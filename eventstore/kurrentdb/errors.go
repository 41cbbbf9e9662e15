package kurrentdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"evident/eventstore"
)

// ErrMultiStreamUnsupported means an Append named several streams and the
// server has no multi-stream append (it came with KurrentDB 25.1). It is
// also an eventstore.ErrInvalid: retrying cannot help.
var ErrMultiStreamUnsupported = fmt.Errorf("kurrentdb eventstore: the server has no multi-stream append (KurrentDB 25.1 or later needed): %w", eventstore.ErrInvalid)

// mapError translates what the client returned into the port's sentinels,
// wrapping the cause too. The client's own *kurrentdb.Error is recognised
// with errors.As; its FromError reports ok == false exactly when there is an
// error, which reads backwards, so it is not used.
func mapError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	// A cancelled call may surface as a gRPC status or a client error code
	// rather than as ctx's error; keep errors.Is(err, context.Canceled) true.
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, cerr, err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("kurrentdb eventstore: %s: %w", op, err)
	}

	var kerr *kurrentdb.Error
	if !errors.As(err, &kerr) {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("kurrentdb eventstore: %s: the server ended the call: %w (%w)", op, eventstore.ErrUnavailable, err)
		}
		return fmt.Errorf("kurrentdb eventstore: %s: %w", op, err)
	}
	switch kerr.Code() {
	case kurrentdb.ErrorCodeWrongExpectedVersion,
		kurrentdb.ErrorCodeStreamRevisionConflict,
		kurrentdb.ErrorCodeAppendConsistencyViolation:
		return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, eventstore.ErrWrongVersion, err)
	case kurrentdb.ErrorCodeAppendRecordSizeExceeded,
		kurrentdb.ErrorCodeAppendTransactionSizeExceeded:
		return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, eventstore.ErrTooLarge, err)
	case kurrentdb.ErrorUnavailable,
		kurrentdb.ErrorCodeConnectionClosed,
		kurrentdb.ErrorCodeNotLeader,
		kurrentdb.ErrorCodeDeadlineExceeded,
		kurrentdb.ErrorAborted: // the server's own timeouts: the write may or may not have landed
		return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, eventstore.ErrUnavailable, err)
	case kurrentdb.ErrorCodeUnsupportedFeature:
		return fmt.Errorf("kurrentdb eventstore: %s: the server does not support this call: %w", op, err)
	case kurrentdb.ErrorCodeAccessDenied, kurrentdb.ErrorCodeUnauthenticated:
		return fmt.Errorf("kurrentdb eventstore: %s: check the credentials in the connection string: %w", op, err)
	case kurrentdb.ErrorCodeStreamDeleted, kurrentdb.ErrorCodeStreamTombstoned:
		return fmt.Errorf("kurrentdb eventstore: %s: the stream is deleted: %w", op, err)
	case kurrentdb.ErrorCodeUnknown:
		// The single-stream append reports its size limits as a plain
		// InvalidArgument status, with no code of the client's own.
		if s, ok := status.FromError(kerr.Err()); ok {
			switch {
			case s.Code() == codes.InvalidArgument && strings.Contains(s.Message(), "Maximum Append"):
				return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, eventstore.ErrTooLarge, err)
			case s.Code() == codes.Unavailable:
				return fmt.Errorf("kurrentdb eventstore: %s: %w (%w)", op, eventstore.ErrUnavailable, err)
			}
		}
	}
	return fmt.Errorf("kurrentdb eventstore: %s: %w", op, err)
}

// isCode reports whether err is the client's error with that code.
func isCode(err error, code kurrentdb.ErrorCode) bool {
	var kerr *kurrentdb.Error
	return errors.As(err, &kerr) && kerr.Code() == code
}
