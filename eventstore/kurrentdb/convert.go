package kurrentdb

import (
	"bytes"
	"encoding/json"
	"math"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"evident/eventstore"
)

// fromPosition turns the server's commit/prepare pair into the port's. The
// server writes "no position" as the largest value, which is no place in
// the log: it becomes the zero Position, and callers that need a real one
// check IsZero.
func fromPosition(p kurrentdb.Position) eventstore.Position {
	if p.Commit == math.MaxUint64 || p.Prepare == math.MaxUint64 {
		return eventstore.Position{}
	}
	return eventstore.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// fromAll is where a read or subscription of $all that must see everything
// after p starts: the start of the log for the zero Position, else p itself
// (callers drop an event at exactly p, whether or not the server sends it).
func fromAll(p eventstore.Position) kurrentdb.AllPosition {
	if p.IsZero() {
		return kurrentdb.Start{}
	}
	return kurrentdb.Position{Commit: p.Commit, Prepare: p.Prepare}
}

// streamState maps an expected version of the port onto the client's sealed
// StreamState. Validation has rejected anything below eventstore.Any.
func streamState(expected int64) kurrentdb.StreamState {
	switch expected {
	case eventstore.Any:
		return kurrentdb.Any{}
	case eventstore.NoStream:
		return kurrentdb.NoStream{}
	default:
		return kurrentdb.StreamRevision{Value: uint64(expected)}
	}
}

// toEventData is an event as the single-stream append sends it: data and
// metadata byte for byte, both marked JSON.
func toEventData(e eventstore.EventData) kurrentdb.EventData {
	return kurrentdb.EventData{
		EventID:     e.ID,
		EventType:   e.Type,
		ContentType: kurrentdb.ContentTypeJson,
		Data:        e.Data,
		Metadata:    e.Metadata,
	}
}

// metadataKey carries Evident's metadata through the multi-stream append.
// Client v1.4.2 sends a record's metadata as the server's "properties", a
// map that it accepts only as a JSON object of strings, and Evident's
// metadata has numbers in it; so the whole document travels as one string
// property, byte for byte, and fromRecorded unwraps it.
const metadataKey = "evident-metadata"

// toMultiEventData is an event as the multi-stream append sends it.
func toMultiEventData(e eventstore.EventData) (kurrentdb.EventData, error) {
	d := toEventData(e)
	if len(e.Metadata) == 0 {
		return d, nil
	}
	md, err := json.Marshal(map[string]string{metadataKey: string(e.Metadata)})
	if err != nil {
		return d, err
	}
	d.Metadata = md
	return d, nil
}

// unwrapMetadata returns Evident's metadata of an event as written. Events
// of a single-stream append carry it as they were given. Events of a
// multi-stream append carry it in the metadataKey property, which servers
// have handed back in three shapes: inside a JSON object of the properties
// (KurrentDB 25.0), as a serialised protobuf Struct of them (later
// versions), or among the system metadata of the read. All three are tried.
func unwrapMetadata(user []byte, system map[string]string) json.RawMessage {
	if v, ok := system[metadataKey]; ok {
		return json.RawMessage(v)
	}
	if len(user) == 0 {
		return nil
	}
	if !bytes.Contains(user, []byte(metadataKey)) {
		return json.RawMessage(user)
	}
	if json.Valid(user) {
		var props map[string]json.RawMessage
		if json.Unmarshal(user, &props) == nil {
			var s string
			if raw, ok := props[metadataKey]; ok && json.Unmarshal(raw, &s) == nil {
				return json.RawMessage(s)
			}
		}
		return json.RawMessage(user)
	}
	var props structpb.Struct
	if proto.Unmarshal(user, &props) == nil {
		if v, ok := props.GetFields()[metadataKey]; ok {
			if s, ok := v.GetKind().(*structpb.Value_StringValue); ok {
				return json.RawMessage(s.StringValue)
			}
		}
	}
	return json.RawMessage(user)
}

// fromRecorded is an event as the port hands it out.
func fromRecorded(e *kurrentdb.RecordedEvent) eventstore.RecordedEvent {
	out := eventstore.RecordedEvent{
		ID:         e.EventID,
		Stream:     e.StreamID,
		Type:       e.EventType,
		Version:    int64(e.EventNumber),
		Position:   fromPosition(e.Position),
		Metadata:   unwrapMetadata(e.UserMetadata, e.SystemMetadata),
		RecordedAt: e.CreatedDate.UTC(),
	}
	if len(e.Data) > 0 {
		out.Data = e.Data
	}
	return out
}
