package kurrentdb_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/eventstore/eventstoretest"
	"evident/eventstore/kurrentdb"
)

const (
	envURL     = "EVIDENT_TEST_KURRENTDB_URL"
	envRequire = "EVIDENT_TEST_REQUIRE_KURRENTDB"
)

// serverURL is the KurrentDB to test against. Without EVIDENT_TEST_KURRENTDB_URL
// the test is skipped, or fails when EVIDENT_TEST_REQUIRE_KURRENTDB=1.
func serverURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv(envURL)
	if url == "" {
		if os.Getenv(envRequire) == "1" {
			t.Fatalf("%s=1 but %s is not set", envRequire, envURL)
		}
		t.Skipf("%s is not set (e.g. kurrentdb://localhost:2113?tls=false, see docker-compose.yml); skipping the tests against a KurrentDB server", envURL)
	}
	return url
}

// TestConformance runs the port's suite against a KurrentDB server. Every
// subtest has its own Store on the one server, as several Evident processes
// would, and the suite's streams are not Evident's, so the Store reads every
// non-system stream. The server must be KurrentDB 25.1 or later: the suite
// appends to several streams at once.
func TestConformance(t *testing.T) {
	url := serverURL(t)
	t.Parallel()
	eventstoretest.Run(t, func(t *testing.T) eventstore.Store {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		s, err := kurrentdb.NewWithOptions(ctx, url, kurrentdb.Options{StreamRegex: "^[^$]"})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, s.Close()) })
		return s
	})
}

// TestDefaultFilterSeesOnlyEvidentsStreams checks the server-side filter
// with the default prefixes on a real server.
func TestDefaultFilterSeesOnlyEvidentsStreams(t *testing.T) {
	url := serverURL(t)
	t.Parallel()
	ctx := t.Context()
	s, err := kurrentdb.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })

	marker, err := s.Append(ctx, eventstore.AppendRequest{Stream: "user-" + uuidString(), Expected: eventstore.NoStream, Events: oneEvent()})
	require.NoError(t, err)
	foreign := "order-" + uuidString()
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: foreign, Expected: eventstore.NoStream, Events: oneEvent()})
	require.NoError(t, err)
	mine := "session-" + uuidString()
	_, err = s.Append(ctx, eventstore.AppendRequest{Stream: mine, Expected: eventstore.NoStream, Events: oneEvent()})
	require.NoError(t, err)

	var seen []string
	after := marker.Position
	for {
		evs, err := s.ReadAll(ctx, after, 100)
		require.NoError(t, err)
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			seen = append(seen, e.Stream)
			after = e.Position
		}
	}
	assert.Contains(t, seen, mine)
	assert.NotContains(t, seen, foreign)
	for _, stream := range seen {
		assert.Regexp(t, `^(user|session|email)-`, stream)
	}
}

// TestSubscribeOnServer follows the log on a real server until an event
// appended after the subscription started arrives.
func TestSubscribeOnServer(t *testing.T) {
	url := serverURL(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := kurrentdb.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })

	stream := "user-" + uuidString()
	first, err := s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: eventstore.NoStream, Events: oneEvent()})
	require.NoError(t, err)
	want := oneEvent()
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = s.Append(ctx, eventstore.AppendRequest{Stream: stream, Expected: 0, Events: want})
	}()
	sub, stop := context.WithCancel(ctx)
	defer stop()
	err = s.Subscribe(sub, first.Position, func(_ context.Context, e eventstore.RecordedEvent) error {
		assert.True(t, first.Position.Less(e.Position))
		if e.ID == want[0].ID {
			stop()
		}
		return nil
	})
	assert.ErrorIs(t, err, context.Canceled, "ended by the handler, having seen the event")
	assert.NoError(t, ctx.Err(), "not by the timeout")
}

func uuidString() string { return uuid.NewString() }

func oneEvent() []eventstore.EventData {
	id := uuid.Must(uuid.NewV7())
	return []eventstore.EventData{{ID: id, Type: "test.happened", Data: []byte(`{}`), Metadata: []byte(`{"schema_version":1}`)}}
}
