package projections

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
)

// metadataCases are envelopes readEnvelope reads itself, and ones it must
// leave to json.Unmarshal.
var metadataCases = []string{
	`{"event_id":"0190a5f3-7b1c-7d2e-8f00-112233445566","occurred_at":"2026-01-01T00:00:00.123456Z","actor_id":"admin-1","correlation_id":"c","schema_version":1}`,
	` { "actor_id" : "a" , "schema_version" : 2 , "occurred_at" : "2026-01-01T02:00:00+02:00" } `,
	`{"causation_id":"x","request_id":"y","schema_version":0}`,
	`{}`,
	`{"actor_id":"a","actor_id":"b"}`,
	`{"actor_id":"caf\u00e9"}`,
	`{"actor_id":"café"}`,
	`{"actor_id":"tab\there"}`,
	`{"actor_id":null}`,
	`{"Actor_ID":"case"}`,
	`{"unknown":{"nested":[1,2]},"actor_id":"a"}`,
	`{"schema_version":1.0}`,
	`{"schema_version":1e0}`,
	`{"schema_version":01}`,
	`{"schema_version":-0}`,
	`{"schema_version":-}`,
	`{"schema_version":99999999999999999999}`,
	`{"schema_version":"1"}`,
	`{"event_id":"not-a-uuid"}`,
	`{"event_id":"{0190a5f3-7b1c-7d2e-8f00-112233445566}"}`,
	`{"occurred_at":"yesterday"}`,
	`{"occurred_at":null}`,
	`{"actor_id":"a"} x`,
	`{"actor_id":"a",}`,
	`{"actor_id":"a"`,
	`{"actor_id" "a"}`,
	`[]`,
	`null`,
	``,
}

// readEnvelope reads what it takes as json.Unmarshal does, and the
// envelope of any metadata is json.Unmarshal's, errors included.
func TestMetadataReadsAsJSONUnmarshal(t *testing.T) {
	fast := 0
	for _, in := range metadataCases {
		checkMetadata(t, []byte(in))
		if _, ok := readEnvelope([]byte(in)); ok {
			fast++
		}
	}
	assert.Equal(t, 7, fast, "the plain envelopes are read without json.Unmarshal")
}

func FuzzMetadata(f *testing.F) {
	for _, in := range metadataCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkMetadata(t, b) })
}

func checkMetadata(t *testing.T, b []byte) {
	t.Helper()
	ev := eventstore.RecordedEvent{Metadata: b}
	got, err := metadata(ev)
	var md eventstore.Metadata
	werr := json.Unmarshal(b, &md)
	switch {
	case len(b) == 0:
		require.NoError(t, err)
		assert.Equal(t, envelope{}, got)
	case werr != nil:
		require.Error(t, err, "%q", b)
		assert.ErrorContains(t, err, werr.Error(), "%q", b)
	default:
		require.NoError(t, err, "%q", b)
		assert.Equal(t, md.ActorID, got.actorID, "%q", b)
		assert.Equal(t, md.SchemaVersion, got.schema, "%q", b)
		assert.True(t, md.OccurredAt.Equal(got.occurredAt), "%q", b)
		assert.Equal(t, md.OccurredAt.String(), got.occurredAt.String(), "%q", b)
	}
}
