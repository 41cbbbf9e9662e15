package readmodels

import (
	"encoding/json"
	"errors"
	"time"

	"evident/eventstore"

	"github.com/google/uuid"
)

// Sentinels.
var (
	ErrNotFound  = errors.New("readmodels: not found")
	ErrConflict  = errors.New("readmodels: conflict")
	ErrBadCursor = errors.New("readmodels: bad cursor")
)

// User is a row of the users table.
type User struct {
	ID          uuid.UUID           `json:"id"`
	Email       string              `json:"email"`
	Name        string              `json:"name"`
	Roles       []string            `json:"roles"`
	Status      string              `json:"status"`
	Version     int64               `json:"version"`
	CreatedAt   time.Time           `json:"created_at"`
	UpdatedAt   time.Time           `json:"updated_at"`
	ActivatedAt *time.Time          `json:"activated_at,omitempty"`
	DeletedAt   *time.Time          `json:"deleted_at,omitempty"`
	Position    eventstore.Position `json:"position"`
}

// Session is a row of the sessions table.
type Session struct {
	ID        uuid.UUID  `json:"id"`
	UserID    uuid.UUID  `json:"user_id"`
	Status    string     `json:"status"` // open, logged_out, expired, revoked
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	EndReason string     `json:"end_reason,omitempty"`
	Version   int64      `json:"version"` // of the session stream
}

// ActivationToken is a row of the activation tokens table (hash only).
type ActivationToken struct {
	TokenHash   string     `json:"token_hash"`
	UserID      uuid.UUID  `json:"user_id"`
	Status      string     `json:"status"` // pending, used, superseded, revoked, expired
	RequestedBy string     `json:"requested_by"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
}

// AuditRecord is one event of the log as the audit trail shows it.
type AuditRecord struct {
	EventID       uuid.UUID           `json:"event_id"`
	EventType     string              `json:"event_type"`
	AggregateID   string              `json:"aggregate_id"`
	AggregateType string              `json:"aggregate_type"`
	UserID        *uuid.UUID          `json:"user_id"`
	ActorID       string              `json:"actor_id"`
	Action        string              `json:"action"`
	Resource      string              `json:"resource"`
	ResourceID    string              `json:"resource_id"`
	Details       json.RawMessage     `json:"details"`
	OccurredAt    time.Time           `json:"occurred_at"`
	Position      eventstore.Position `json:"position"`
	Metadata      json.RawMessage     `json:"metadata"`
}

// Page is one page of a keyset-paginated list. NextCursor is empty on the last page.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// UserFilter selects users. Limit 0 means the default (50); at most 500.
type UserFilter struct {
	Status string
	Email  string // normalised, exact
	Cursor string
	Limit  int
}

// AuditFilter selects audit records. From is inclusive, To exclusive; zero
// times are open ends. Desc lists newest first.
type AuditFilter struct {
	UserID  *uuid.UUID
	ActorID string
	Action  string
	From    time.Time
	To      time.Time
	Cursor  string
	Limit   int
	Desc    bool
}
