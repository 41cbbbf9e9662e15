package user

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event type names. They are part of the log's contract: never rename or
// delete one; add a new type or a new schema version instead.
const (
	TypeCreated                = "user.created"
	TypeUpdated                = "user.updated"
	TypeActivationRequested    = "user.activation_requested"
	TypeActivated              = "user.activated"
	TypeDeactivated            = "user.deactivated"
	TypeStatusChanged          = "user.status_changed"
	TypeActivationTokenExpired = "user.activation_token_expired"
	TypeDeleted                = "user.deleted"
)

// SchemaVersion is the version of every event shape this package writes.
const SchemaVersion = 1

// Event is one fact in a user's stream. The set is closed.
type Event interface {
	EventType() string
	userEvent()
}

// Created records a registration.
type Created struct {
	UserID       uuid.UUID  `json:"user_id"`
	Email        string     `json:"email"`
	Name         string     `json:"name"`
	Roles        []string   `json:"roles"`
	CredentialID *uuid.UUID `json:"credential_id,omitempty"`
}

// Updated records changed profile fields; nil fields did not change.
type Updated struct {
	UserID       uuid.UUID  `json:"user_id"`
	Email        *string    `json:"email,omitempty"`
	Name         *string    `json:"name,omitempty"`
	Roles        []string   `json:"roles,omitempty"`
	CredentialID *uuid.UUID `json:"credential_id,omitempty"`
	UpdatedBy    string     `json:"updated_by"`
}

// ActivationRequested records a new activation token. Only its SHA-256 hash is kept.
type ActivationRequested struct {
	UserID      uuid.UUID `json:"user_id"`
	TokenHash   string    `json:"token_hash"`
	ExpiresAt   time.Time `json:"expires_at"`
	RequestedBy string    `json:"requested_by"`
}

// Activation methods.
const (
	MethodToken = "token"
	MethodAdmin = "admin"
	MethodAuto  = "auto"
)

// Activated records that a user became active.
type Activated struct {
	UserID       uuid.UUID  `json:"user_id"`
	ActivatedBy  string     `json:"activated_by"`
	Method       string     `json:"method"`
	TokenHash    string     `json:"token_hash,omitempty"`
	CredentialID *uuid.UUID `json:"credential_id,omitempty"`
}

// Deactivated records that a user became inactive.
type Deactivated struct {
	UserID        uuid.UUID `json:"user_id"`
	DeactivatedBy string    `json:"deactivated_by"`
	Reason        string    `json:"reason,omitempty"`
}

// StatusChanged records a status change that has no event of its own (suspension).
type StatusChanged struct {
	UserID    uuid.UUID `json:"user_id"`
	From      Status    `json:"from"`
	To        Status    `json:"to"`
	Reason    string    `json:"reason,omitempty"`
	ChangedBy string    `json:"changed_by"`
}

// ActivationTokenExpired records that a pending token passed its expiry unused.
type ActivationTokenExpired struct {
	UserID    uuid.UUID `json:"user_id"`
	TokenHash string    `json:"token_hash"`
	ExpiredAt time.Time `json:"expired_at"`
}

// Deleted records the end of a user. It is final.
type Deleted struct {
	UserID    uuid.UUID `json:"user_id"`
	DeletedBy string    `json:"deleted_by"`
	Reason    string    `json:"reason,omitempty"`
}

func (Created) EventType() string                { return TypeCreated }
func (Updated) EventType() string                { return TypeUpdated }
func (ActivationRequested) EventType() string    { return TypeActivationRequested }
func (Activated) EventType() string              { return TypeActivated }
func (Deactivated) EventType() string            { return TypeDeactivated }
func (StatusChanged) EventType() string          { return TypeStatusChanged }
func (ActivationTokenExpired) EventType() string { return TypeActivationTokenExpired }
func (Deleted) EventType() string                { return TypeDeleted }

func (Created) userEvent()                {}
func (Updated) userEvent()                {}
func (ActivationRequested) userEvent()    {}
func (Activated) userEvent()              {}
func (Deactivated) userEvent()            {}
func (StatusChanged) userEvent()          {}
func (ActivationTokenExpired) userEvent() {}
func (Deleted) userEvent()                {}

// IsType reports whether typ is a user event type.
func IsType(typ string) bool {
	_, ok := decoders[typ]
	return ok
}

var decoders = map[string]func() Event{
	TypeCreated:                func() Event { return &Created{} },
	TypeUpdated:                func() Event { return &Updated{} },
	TypeActivationRequested:    func() Event { return &ActivationRequested{} },
	TypeActivated:              func() Event { return &Activated{} },
	TypeDeactivated:            func() Event { return &Deactivated{} },
	TypeStatusChanged:          func() Event { return &StatusChanged{} },
	TypeActivationTokenExpired: func() Event { return &ActivationTokenExpired{} },
	TypeDeleted:                func() Event { return &Deleted{} },
}

// Decode turns a stored event back into its type, upcasting older schema
// versions. Schema 0 (absent) is read as 1.
func Decode(typ string, schema int, data []byte) (Event, error) {
	mk, ok := decoders[typ]
	if !ok {
		return nil, fmt.Errorf("user: unknown event type %q", typ)
	}
	if schema > SchemaVersion {
		return nil, fmt.Errorf("user: %s schema %d is newer than this build reads (%d)", typ, schema, SchemaVersion)
	}
	ptr := mk()
	if err := json.Unmarshal(data, ptr); err != nil {
		return nil, fmt.Errorf("user: decode %s: %w", typ, err)
	}
	return deref(ptr), nil
}

func deref(e Event) Event {
	switch v := e.(type) {
	case *Created:
		return *v
	case *Updated:
		return *v
	case *ActivationRequested:
		return *v
	case *Activated:
		return *v
	case *Deactivated:
		return *v
	case *StatusChanged:
		return *v
	case *ActivationTokenExpired:
		return *v
	case *Deleted:
		return *v
	}
	return e
}
