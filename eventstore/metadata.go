package eventstore

import (
	"time"

	"github.com/google/uuid"
)

// Metadata is the envelope every Evident event carries besides its data.
type Metadata struct {
	EventID       uuid.UUID `json:"event_id"`
	OccurredAt    time.Time `json:"occurred_at"`
	ActorID       string    `json:"actor_id"`
	CorrelationID string    `json:"correlation_id"`
	CausationID   string    `json:"causation_id,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	SchemaVersion int       `json:"schema_version"`
}
