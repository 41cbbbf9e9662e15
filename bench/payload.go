package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"evident/domain/user"
	"evident/eventstore"
)

// payload is one event as every system under test stores it: the same
// bytes (a real user.created body and Evident's metadata envelope, about 300
// bytes together) whichever store writes them.
type payload struct {
	ID   uuid.UUID
	Type string
	Data []byte
	Meta []byte
}

// combined is data and metadata in one JSON document, for stores with a
// single data column (goes).
func (p payload) combined() []byte {
	out := make([]byte, 0, len(p.Data)+len(p.Meta)+16)
	out = append(out, `{"d":`...)
	out = append(out, p.Data...)
	out = append(out, `,"m":`...)
	out = append(out, p.Meta...)
	return append(out, '}')
}

func (p payload) size() int { return len(p.Data) + len(p.Meta) }

// newPayload builds a user.created event for the user id.
func newPayload(userID uuid.UUID) payload {
	id := uuid.Must(uuid.NewV7())
	short := userID.String()[:8]
	data, err := json.Marshal(user.Created{
		UserID: userID,
		Email:  "bench-" + short + "@example.com",
		Name:   "Benchmark User " + short,
		Roles:  []string{user.RoleMember},
	})
	if err != nil {
		panic(err)
	}
	meta, err := json.Marshal(eventstore.Metadata{
		EventID:       id,
		OccurredAt:    time.Now().UTC(),
		ActorID:       "anonymous",
		CorrelationID: id.String(),
		RequestID:     "bench-" + short,
		SchemaVersion: user.SchemaVersion,
	})
	if err != nil {
		panic(err)
	}
	return payload{ID: id, Type: user.TypeCreated, Data: data, Meta: meta}
}

func streamName(id uuid.UUID) string { return "user-" + id.String() }

func (p payload) String() string { return fmt.Sprintf("%s %s (%d bytes)", p.Type, p.ID, p.size()) }
