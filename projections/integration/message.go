package integration

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
)

// ContractVersion is the version of the message shapes below. It moves only
// on a change a consumer could trip over (a field removed, renamed or changing
// meaning); adding a field keeps it. It is independent of the domain events'
// schema versions: an upcast domain event still maps onto the same contract.
const ContractVersion = 1

// Message is the public envelope of every integration event, the JSON body
// on the wire. It never carries e-mail addresses, names, token hashes,
// credential ids or free-text reasons: a consumer that needs a user's
// profile asks the API for it, with its own authorisation.
type Message struct {
	// Type is the domain event type, e.g. "user.activated"; also the routing key.
	Type string `json:"type"`
	// Version is the contract version, ContractVersion when written.
	Version int `json:"version"`
	// EventID is the domain event's id, also the AMQP message id: the key
	// consumers deduplicate by.
	EventID uuid.UUID `json:"event_id"`
	// OccurredAt is when the event happened (UTC).
	OccurredAt time.Time `json:"occurred_at"`
	// UserID is the user the event is about.
	UserID uuid.UUID `json:"user_id"`
	// Data holds the type's fields; see the *Data types.
	Data json.RawMessage `json:"data"`
}

// UserCreatedData is the data of user.created.
type UserCreatedData struct {
	Roles []string `json:"roles"`
}

// Names of changed fields in UserUpdatedData.Changed.
const (
	FieldEmail    = "email"
	FieldName     = "name"
	FieldRoles    = "roles"
	FieldPassword = "password"
)

// UserUpdatedData is the data of user.updated: which fields changed, never
// their values, except roles (not personal, and what authorisation caches need).
type UserUpdatedData struct {
	Changed []string `json:"changed"`
	Roles   []string `json:"roles,omitempty"`
}

// ActivationRequestedData is the data of user.activation_requested. The raw
// token is not in the event log (only its hash is), so no message can carry it.
type ActivationRequestedData struct {
	ExpiresAt time.Time `json:"expires_at"`
}

// UserActivatedData is the data of user.activated.
type UserActivatedData struct {
	// Method is "token", "admin" or "auto".
	Method string `json:"method"`
	// By is the actor: a user id, or "system".
	By string `json:"by,omitempty"`
}

// UserDeactivatedData is the data of user.deactivated. The free-text reason
// stays in the log: an admin typed it, and it may name a person.
type UserDeactivatedData struct {
	By string `json:"by,omitempty"`
}

// UserStatusChangedData is the data of user.status_changed (e.g. a suspension).
type UserStatusChangedData struct {
	From string `json:"from"`
	To   string `json:"to"`
	By   string `json:"by,omitempty"`
}

// ActivationTokenExpiredData is the data of user.activation_token_expired.
type ActivationTokenExpiredData struct {
	ExpiredAt time.Time `json:"expired_at"`
}

// UserDeletedData is the data of user.deleted.
type UserDeletedData struct {
	By string `json:"by,omitempty"`
}

// ReasonOther replaces a session revocation reason that is not one of the
// codes Evident writes itself (session.Reason*): such a reason is free text.
const ReasonOther = "other"

// SessionData is the data of the auth.* session events. ExpiresAt is set on
// auth.user_logged_in (when it will expire) and auth.session_expired (when it
// did); Reason on auth.session_revoked.
type SessionData struct {
	SessionID uuid.UUID  `json:"session_id"`
	Reason    string     `json:"reason,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// NewMessage maps a recorded event onto its integration message. It reports
// false, with no error, for events that are not published: the e-mail claim
// events (internal bookkeeping of a uniqueness rule) and types it does not
// know. An event it cannot decode is an error; retrying will not help.
func NewMessage(ev eventstore.RecordedEvent) (Message, bool, error) {
	m, _, ok, err := newMessage(ev)
	return m, ok, err
}

// newMessage is NewMessage that also returns the event's metadata.
func newMessage(ev eventstore.RecordedEvent) (Message, eventstore.Metadata, bool, error) {
	if email.IsType(ev.Type) || (!user.IsType(ev.Type) && !session.IsType(ev.Type)) {
		return Message{}, eventstore.Metadata{}, false, nil
	}
	var md eventstore.Metadata
	if len(ev.Metadata) > 0 {
		if err := json.Unmarshal(ev.Metadata, &md); err != nil {
			return Message{}, md, false, fmt.Errorf("integration: metadata of %s: %w", ev.ID, err)
		}
	}
	at := md.OccurredAt
	if at.IsZero() {
		at = ev.RecordedAt
	}
	m := Message{Type: ev.Type, Version: ContractVersion, EventID: ev.ID, OccurredAt: at.UTC()}

	var data any
	if user.IsType(ev.Type) {
		e, err := user.Decode(ev.Type, md.SchemaVersion, ev.Data)
		if err != nil {
			return Message{}, md, false, fmt.Errorf("integration: %w", err)
		}
		m.UserID, data = userData(e)
	} else {
		e, err := session.Decode(ev.Type, md.SchemaVersion, ev.Data)
		if err != nil {
			return Message{}, md, false, fmt.Errorf("integration: %w", err)
		}
		m.UserID, data = sessionData(e)
	}
	if data == nil {
		return Message{}, md, false, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return Message{}, md, false, fmt.Errorf("integration: encode %s: %w", ev.Type, err)
	}
	m.Data = b
	return m, md, true, nil
}

func userData(e user.Event) (uuid.UUID, any) {
	switch e := e.(type) {
	case user.Created:
		return e.UserID, UserCreatedData{Roles: nonNil(e.Roles)}
	case user.Updated:
		d := UserUpdatedData{Changed: []string{}}
		if e.Email != nil {
			d.Changed = append(d.Changed, FieldEmail)
		}
		if e.Name != nil {
			d.Changed = append(d.Changed, FieldName)
		}
		if e.Roles != nil {
			d.Changed = append(d.Changed, FieldRoles)
			d.Roles = e.Roles
		}
		if e.CredentialID != nil {
			d.Changed = append(d.Changed, FieldPassword)
		}
		return e.UserID, d
	case user.ActivationRequested:
		return e.UserID, ActivationRequestedData{ExpiresAt: e.ExpiresAt.UTC()}
	case user.Activated:
		return e.UserID, UserActivatedData{Method: e.Method, By: e.ActivatedBy}
	case user.Deactivated:
		return e.UserID, UserDeactivatedData{By: e.DeactivatedBy}
	case user.StatusChanged:
		return e.UserID, UserStatusChangedData{From: string(e.From), To: string(e.To), By: e.ChangedBy}
	case user.ActivationTokenExpired:
		return e.UserID, ActivationTokenExpiredData{ExpiredAt: e.ExpiredAt.UTC()}
	case user.Deleted:
		return e.UserID, UserDeletedData{By: e.DeletedBy}
	}
	return uuid.Nil, nil
}

func sessionData(e session.Event) (uuid.UUID, any) {
	switch e := e.(type) {
	case session.LoggedIn:
		at := e.ExpiresAt.UTC()
		return e.UserID, SessionData{SessionID: e.SessionID, ExpiresAt: &at}
	case session.LoggedOut:
		return e.UserID, SessionData{SessionID: e.SessionID}
	case session.Expired:
		at := e.ExpiredAt.UTC()
		return e.UserID, SessionData{SessionID: e.SessionID, ExpiresAt: &at}
	case session.Revoked:
		return e.UserID, SessionData{SessionID: e.SessionID, Reason: reasonCode(e.Reason)}
	}
	return uuid.Nil, nil
}

func reasonCode(r string) string {
	switch r {
	case session.ReasonUserDeactivated, session.ReasonUserSuspended, session.ReasonUserDeleted, session.ReasonRevoked:
		return r
	case "":
		return ""
	}
	return ReasonOther
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
