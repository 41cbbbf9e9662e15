// Package session is the Session aggregate: one stream per login. It does no
// I/O and reads no clock. The raw bearer token never reaches it: only its hash.
package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event type names; never rename or delete one.
const (
	TypeLoggedIn  = "auth.user_logged_in"
	TypeLoggedOut = "auth.user_logged_out"
	TypeExpired   = "auth.session_expired"
	TypeRevoked   = "auth.session_revoked"
)

// SchemaVersion is the version of every event shape this package writes.
const SchemaVersion = 1

// Revocation reasons written by Evident itself.
const (
	ReasonUserDeactivated = "user_deactivated"
	ReasonUserSuspended   = "user_suspended"
	ReasonUserDeleted     = "user_deleted"
	ReasonRevoked         = "revoked"
	ReasonPasswordChanged = "password_changed"
)

// Errors.
var (
	ErrExists   = errors.New("session: already exists")
	ErrNotFound = errors.New("session: not found")
)

// Event is one fact in a session's stream.
type Event interface {
	EventType() string
	sessionEvent()
}

// LoggedIn opens a session.
type LoggedIn struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
	TokenHash string    `json:"token_hash"`
	ExpiresAt time.Time `json:"expires_at"`
}

// LoggedOut closes a session at its holder's request.
type LoggedOut struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
}

// Expired closes a session that outlived its expiry.
type Expired struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
	ExpiredAt time.Time `json:"expired_at"`
}

// Revoked closes a session by someone else's decision.
type Revoked struct {
	SessionID uuid.UUID `json:"session_id"`
	UserID    uuid.UUID `json:"user_id"`
	Reason    string    `json:"reason"`
	RevokedBy string    `json:"revoked_by"`
}

func (LoggedIn) EventType() string  { return TypeLoggedIn }
func (LoggedOut) EventType() string { return TypeLoggedOut }
func (Expired) EventType() string   { return TypeExpired }
func (Revoked) EventType() string   { return TypeRevoked }
func (LoggedIn) sessionEvent()      {}
func (LoggedOut) sessionEvent()     {}
func (Expired) sessionEvent()       {}
func (Revoked) sessionEvent()       {}

// IsType reports whether typ is a session event type.
func IsType(typ string) bool {
	switch typ {
	case TypeLoggedIn, TypeLoggedOut, TypeExpired, TypeRevoked:
		return true
	}
	return false
}

// Decode turns a stored event back into its type.
func Decode(typ string, schema int, data []byte) (Event, error) {
	if schema > SchemaVersion {
		return nil, fmt.Errorf("session: %s schema %d is newer than this build reads", typ, schema)
	}
	var (
		e   Event
		err error
	)
	switch typ {
	case TypeLoggedIn:
		var v LoggedIn
		err, e = json.Unmarshal(data, &v), &v
	case TypeLoggedOut:
		var v LoggedOut
		err, e = json.Unmarshal(data, &v), &v
	case TypeExpired:
		var v Expired
		err, e = json.Unmarshal(data, &v), &v
	case TypeRevoked:
		var v Revoked
		err, e = json.Unmarshal(data, &v), &v
	default:
		return nil, fmt.Errorf("session: unknown event type %q", typ)
	}
	if err != nil {
		return nil, fmt.Errorf("session: decode %s: %w", typ, err)
	}
	switch v := e.(type) {
	case *LoggedIn:
		return *v, nil
	case *LoggedOut:
		return *v, nil
	case *Expired:
		return *v, nil
	case *Revoked:
		return *v, nil
	}
	return e, nil
}

// State is a session folded from its stream.
type State struct {
	ID        uuid.UUID
	UserID    uuid.UUID
	Exists    bool
	Open      bool
	TokenHash string
	ExpiresAt time.Time
}

// Evolve applies one event; it is total.
func Evolve(s State, e Event) State {
	switch e := e.(type) {
	case LoggedIn:
		return State{ID: e.SessionID, UserID: e.UserID, Exists: true, Open: true, TokenHash: e.TokenHash, ExpiresAt: e.ExpiresAt}
	case LoggedOut, Expired, Revoked:
		s.Open = false
	}
	return s
}

// Valid reports whether the session is open and unexpired at now.
func (s State) Valid(now time.Time) bool {
	return s.Exists && s.Open && now.Before(s.ExpiresAt)
}

// Command is an intent against one session.
type Command interface{ sessionCommand() }

// Login opens a session. The caller has checked the user and the password.
type Login struct {
	SessionID uuid.UUID
	UserID    uuid.UUID
	TokenHash string
	ExpiresAt time.Time
}

// Logout closes the session by its holder.
type Logout struct{}

// Revoke closes the session by someone else.
type Revoke struct {
	Reason string
	By     string
}

// Expire closes the session when its expiry has passed.
type Expire struct{}

func (Login) sessionCommand()  {}
func (Logout) sessionCommand() {}
func (Revoke) sessionCommand() {}
func (Expire) sessionCommand() {}

// Decide returns the events a command produces; closing a closed session is a no-op.
func Decide(s State, c Command, now time.Time) ([]Event, error) {
	if l, ok := c.(Login); ok {
		if s.Exists {
			return nil, ErrExists
		}
		return []Event{LoggedIn{SessionID: l.SessionID, UserID: l.UserID, TokenHash: l.TokenHash, ExpiresAt: l.ExpiresAt.UTC()}}, nil
	}
	if !s.Exists {
		return nil, ErrNotFound
	}
	if !s.Open {
		return nil, nil
	}
	switch c := c.(type) {
	case Logout:
		return []Event{LoggedOut{SessionID: s.ID, UserID: s.UserID}}, nil
	case Revoke:
		return []Event{Revoked{SessionID: s.ID, UserID: s.UserID, Reason: c.Reason, RevokedBy: c.By}}, nil
	case Expire:
		if now.Before(s.ExpiresAt) {
			return nil, nil
		}
		return []Event{Expired{SessionID: s.ID, UserID: s.UserID, ExpiredAt: s.ExpiresAt.UTC()}}, nil
	}
	return nil, nil
}
