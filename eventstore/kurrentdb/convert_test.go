package kurrentdb

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"evident/eventstore"
)

func TestPositionEncoding(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		server kurrentdb.Position
		port   eventstore.Position
		text   string
	}{
		{kurrentdb.Position{Commit: 1234, Prepare: 1234}, eventstore.Position{Commit: 1234, Prepare: 1234}, "1234"},
		{kurrentdb.Position{Commit: 5000, Prepare: 4876}, eventstore.Position{Commit: 5000, Prepare: 4876}, "5000/4876"},
		{kurrentdb.Position{Commit: math.MaxUint64 - 1, Prepare: 7}, eventstore.Position{Commit: math.MaxUint64 - 1, Prepare: 7}, "18446744073709551614/7"},
	} {
		got := fromPosition(tc.server)
		assert.Equal(t, tc.port, got)
		assert.Equal(t, tc.text, got.String(), "one encoding, for checkpoints and the API")
		back, err := eventstore.ParsePosition(got.String())
		require.NoError(t, err)
		assert.Equal(t, got, back, "the checkpoint encoding round-trips commit/prepare pairs")
		assert.Equal(t, tc.server, fromAll(got), "a stored position resumes $all where it was")
	}

	none := kurrentdb.Position{Commit: math.MaxUint64, Prepare: math.MaxUint64}
	assert.True(t, fromPosition(none).IsZero(), "the server's 'no position' is no place in the log")
	assert.Equal(t, kurrentdb.Start{}, fromAll(eventstore.Position{}), "the zero Position reads from the start")

	// Order follows the log: commit first, then prepare.
	a, b := fromPosition(kurrentdb.Position{Commit: 10, Prepare: 8}), fromPosition(kurrentdb.Position{Commit: 10, Prepare: 9})
	c := fromPosition(kurrentdb.Position{Commit: 11, Prepare: 1})
	assert.True(t, a.Less(b))
	assert.True(t, b.Less(c))
}

func TestStreamState(t *testing.T) {
	t.Parallel()
	assert.Equal(t, kurrentdb.Any{}, streamState(eventstore.Any))
	assert.Equal(t, kurrentdb.NoStream{}, streamState(eventstore.NoStream))
	assert.Equal(t, kurrentdb.StreamRevision{Value: 0}, streamState(0))
	assert.Equal(t, kurrentdb.StreamRevision{Value: 41}, streamState(41))
}

func TestEventDataIsJSONByteForByte(t *testing.T) {
	t.Parallel()
	e := eventstore.EventData{
		ID:       uuid.Must(uuid.NewV7()),
		Type:     "user.created",
		Data:     json.RawMessage("{ \"b\": 1,\n \"a\": 1e400 }"),
		Metadata: json.RawMessage(`{"schema_version":1,"actor_id":"system"}`),
	}
	d := toEventData(e)
	assert.Equal(t, kurrentdb.EventData{
		EventID: e.ID, EventType: "user.created", ContentType: kurrentdb.ContentTypeJson,
		Data: []byte(e.Data), Metadata: []byte(e.Metadata),
	}, d)
}

// The multi-stream append takes metadata only as a JSON object of strings;
// Evident's travels as one string property, and comes back byte for byte in
// every shape a server has returned it.
func TestMultiStreamMetadataRoundTrip(t *testing.T) {
	t.Parallel()
	md := json.RawMessage("{\"event_id\":\"x\",  \"schema_version\":1, \"s\":\"é\\\"q\\\"\"}")
	d, err := toMultiEventData(eventstore.EventData{ID: uuid.New(), Type: "t", Data: json.RawMessage(`{}`), Metadata: md})
	require.NoError(t, err)
	var asStrings map[string]string
	require.NoError(t, json.Unmarshal(d.Metadata, &asStrings), "what client v1.4.2 accepts")
	assert.Equal(t, string(md), asStrings[metadataKey])

	// KurrentDB 25.0: the properties as a JSON object, with keys of its own.
	jsonProps, err := json.Marshal(map[string]any{metadataKey: string(md), "$schema.format": "Json"})
	require.NoError(t, err)
	assert.Equal(t, string(md), string(unwrapMetadata(jsonProps, nil)))

	// Later versions: the properties as a serialised protobuf Struct.
	st, err := structpb.NewStruct(map[string]any{metadataKey: string(md), "$schema.name": "t"})
	require.NoError(t, err)
	protoProps, err := proto.Marshal(st)
	require.NoError(t, err)
	assert.Equal(t, string(md), string(unwrapMetadata(protoProps, nil)))

	// Or among the system metadata of the read.
	sys := map[string]string{"type": "t", "content-type": "application/json", metadataKey: string(md)}
	assert.Equal(t, string(md), string(unwrapMetadata(nil, sys)))

	// No metadata at all stays none.
	d, err = toMultiEventData(eventstore.EventData{ID: uuid.New(), Type: "t"})
	require.NoError(t, err)
	assert.Empty(t, d.Metadata)
	assert.Nil(t, unwrapMetadata(nil, map[string]string{"type": "t"}))
}

func TestUnwrapLeavesOrdinaryMetadataAlone(t *testing.T) {
	t.Parallel()
	for _, md := range []string{
		`{"event_id":"x","schema_version":1}`,
		`{"reason":"mentions evident-metadata in a value"}`,
		`["evident-metadata"]`,
		`{"evident-metadata":{"not":"a string"}}`,
		"not json at all, evident-metadata",
		`null`,
	} {
		assert.Equal(t, md, string(unwrapMetadata([]byte(md), map[string]string{"type": "t"})), md)
	}
}

func TestFromRecorded(t *testing.T) {
	t.Parallel()
	id := uuid.Must(uuid.NewV7())
	created := time.Date(2025, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))
	got := fromRecorded(&kurrentdb.RecordedEvent{
		EventID:        id,
		EventType:      "user.activated",
		ContentType:    "application/json",
		StreamID:       "user-1",
		EventNumber:    7,
		Position:       kurrentdb.Position{Commit: 900, Prepare: 880},
		CreatedDate:    created,
		Data:           []byte(`{"a":1}`),
		SystemMetadata: map[string]string{"type": "user.activated"},
		UserMetadata:   []byte(`{"actor_id":"system"}`),
	})
	assert.Equal(t, eventstore.RecordedEvent{
		ID:         id,
		Stream:     "user-1",
		Type:       "user.activated",
		Version:    7,
		Position:   eventstore.Position{Commit: 900, Prepare: 880},
		Data:       json.RawMessage(`{"a":1}`),
		Metadata:   json.RawMessage(`{"actor_id":"system"}`),
		RecordedAt: created.UTC(),
	}, got)
	assert.Equal(t, time.UTC, got.RecordedAt.Location())

	empty := fromRecorded(&kurrentdb.RecordedEvent{EventID: id, StreamID: "user-1", Data: []byte{}, UserMetadata: []byte{}})
	assert.Nil(t, empty.Data)
	assert.Nil(t, empty.Metadata)
}
