package projections

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"evident/eventstore"
)

// envelope is what the projections read of an event's metadata.
type envelope struct {
	actorID    string
	occurredAt time.Time
	schema     int
}

// metadata reads an event's envelope. Events without metadata read as the
// zero envelope (schema 0 is read as the first schema by the decoders).
//
// A replay reads the metadata of every event, and json.Unmarshal cost
// several allocations each (its decoder state, every string field). The
// metadata Evident writes is read by readEnvelope, which allocates only the
// actor id; whatever it does not take for plain (an escape, an unknown key,
// null, a value that does not parse) goes to json.Unmarshal, so the result
// and the errors are json.Unmarshal's.
func metadata(ev eventstore.RecordedEvent) (envelope, error) {
	if len(ev.Metadata) == 0 {
		return envelope{}, nil
	}
	if env, ok := readEnvelope(ev.Metadata); ok {
		return env, nil
	}
	var md eventstore.Metadata
	if err := json.Unmarshal(ev.Metadata, &md); err != nil {
		return envelope{}, fmt.Errorf("metadata of %s: %w", ev.ID, err)
	}
	return envelope{actorID: md.ActorID, occurredAt: md.OccurredAt, schema: md.SchemaVersion}, nil
}

// readEnvelope reads b when it is a JSON object of eventstore.Metadata's
// keys, spelled as its tags, whose values are plain strings (printable
// ASCII, no escapes) and for schema_version an integer, which decode as
// json.Unmarshal decodes them. Otherwise it returns false.
func readEnvelope(b []byte) (env envelope, ok bool) {
	var (
		md  eventstore.Metadata
		sc  = plainScanner{b: b}
		key []byte
	)
	if !sc.byte('{') {
		return env, false
	}
	if sc.byte('}') {
		return env, sc.end()
	}
	for {
		if key, ok = sc.str(); !ok || !sc.byte(':') {
			return env, false
		}
		switch string(key) {
		case "event_id":
			v, ok := sc.str()
			if !ok || md.EventID.UnmarshalText(v) != nil {
				return env, false
			}
		case "occurred_at":
			v, ok := sc.quoted()
			if !ok || md.OccurredAt.UnmarshalJSON(v) != nil {
				return env, false
			}
		case "actor_id":
			v, ok := sc.str()
			if !ok {
				return env, false
			}
			md.ActorID = string(v)
		case "correlation_id", "causation_id", "request_id":
			if _, ok := sc.str(); !ok {
				return env, false
			}
		case "schema_version":
			v, ok := sc.integer()
			if !ok {
				return env, false
			}
			n, err := strconv.ParseInt(string(v), 10, strconv.IntSize)
			if err != nil {
				return env, false
			}
			md.SchemaVersion = int(n)
		default:
			return env, false
		}
		if sc.byte(',') {
			continue
		}
		if !sc.byte('}') {
			return env, false
		}
		return envelope{actorID: md.ActorID, occurredAt: md.OccurredAt, schema: md.SchemaVersion}, sc.end()
	}
}

// plainScanner reads the plain JSON that readEnvelope takes.
type plainScanner struct {
	b []byte
	i int
}

func (s *plainScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// byte skips white space and then c, if it is there.
func (s *plainScanner) byte(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (s *plainScanner) end() bool {
	s.space()
	return s.i == len(s.b)
}

// quoted reads a plain string and returns it with its quotes.
func (s *plainScanner) quoted() ([]byte, bool) {
	s.space()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	for j := s.i + 1; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '"':
			v := s.b[s.i : j+1]
			s.i = j + 1
			return v, true
		case c < 0x20 || c == '\\' || c >= 0x80:
			return nil, false
		}
	}
	return nil, false
}

// str reads a plain string and returns it without its quotes.
func (s *plainScanner) str() ([]byte, bool) {
	v, ok := s.quoted()
	if !ok {
		return nil, false
	}
	return v[1 : len(v)-1], true
}

// integer reads a JSON number without fraction or exponent.
func (s *plainScanner) integer() ([]byte, bool) {
	s.space()
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	switch {
	case s.i == digits, s.b[digits] == '0' && s.i-digits > 1:
		return nil, false // no digits, or a leading zero
	case s.i < len(s.b) && (s.b[s.i] == '.' || s.b[s.i] == 'e' || s.b[s.i] == 'E'):
		return nil, false
	}
	return s.b[start:s.i], true
}
