package user

import (
	"slices"
	"time"

	"github.com/google/uuid"
)

// Command is an intent against one user. The set is closed.
type Command interface{ userCommand() }

// Register creates a user. Email, Name and Roles must already be normalised.
type Register struct {
	UserID       uuid.UUID
	Email        string
	Name         string
	Roles        []string
	CredentialID *uuid.UUID
}

// Update changes profile fields; nil fields stay as they are.
type Update struct {
	Email        *string
	Name         *string
	Roles        []string
	CredentialID *uuid.UUID
	By           string
}

// RequestActivation issues a new activation token, superseding earlier ones.
type RequestActivation struct {
	TokenHash string
	ExpiresAt time.Time
	By        string
}

// Activate makes a user active by one of the methods.
type Activate struct {
	Method       string
	TokenHash    string // with MethodToken
	CredentialID *uuid.UUID
	By           string
}

// Deactivate makes a user inactive.
type Deactivate struct {
	By     string
	Reason string
}

// Suspend suspends a user.
type Suspend struct {
	By     string
	Reason string
}

// Delete ends a user for good.
type Delete struct {
	By     string
	Reason string
}

// ExpireToken records that a pending token has passed its expiry.
type ExpireToken struct {
	TokenHash string
}

func (Register) userCommand()          {}
func (Update) userCommand()            {}
func (RequestActivation) userCommand() {}
func (Activate) userCommand()          {}
func (Deactivate) userCommand()        {}
func (Suspend) userCommand()           {}
func (Delete) userCommand()            {}
func (ExpireToken) userCommand()       {}

// Decide returns the events a command produces on state s at time now. A
// command that would change nothing returns nil, nil.
func Decide(s State, c Command, now time.Time) ([]Event, error) {
	if r, ok := c.(Register); ok {
		if s.Exists {
			return nil, ErrExists
		}
		return []Event{Created{UserID: r.UserID, Email: r.Email, Name: r.Name, Roles: r.Roles, CredentialID: r.CredentialID}}, nil
	}
	if !s.Exists {
		return nil, ErrNotFound
	}
	if s.Status == StatusDeleted {
		return nil, ErrDeleted
	}
	switch c := c.(type) {
	case Update:
		return decideUpdate(s, c), nil
	case RequestActivation:
		if s.Status == StatusActive {
			return nil, ErrAlreadyActive
		}
		return []Event{ActivationRequested{UserID: s.ID, TokenHash: c.TokenHash, ExpiresAt: c.ExpiresAt.UTC(), RequestedBy: c.By}}, nil
	case Activate:
		return decideActivate(s, c, now)
	case Deactivate:
		if s.Status == StatusInactive {
			return nil, nil
		}
		return []Event{Deactivated{UserID: s.ID, DeactivatedBy: c.By, Reason: c.Reason}}, nil
	case Suspend:
		if s.Status == StatusSuspended {
			return nil, nil
		}
		return []Event{StatusChanged{UserID: s.ID, From: s.Status, To: StatusSuspended, Reason: c.Reason, ChangedBy: c.By}}, nil
	case Delete:
		return []Event{Deleted{UserID: s.ID, DeletedBy: c.By, Reason: c.Reason}}, nil
	case ExpireToken:
		t, ok := s.Tokens[c.TokenHash]
		if !ok || t.Status != TokenPending || now.Before(t.ExpiresAt) {
			return nil, nil
		}
		return []Event{ActivationTokenExpired{UserID: s.ID, TokenHash: c.TokenHash, ExpiredAt: t.ExpiresAt.UTC()}}, nil
	}
	return nil, nil
}

func decideUpdate(s State, c Update) []Event {
	e := Updated{UserID: s.ID, UpdatedBy: c.By}
	changed := false
	if c.Email != nil && *c.Email != s.Email {
		e.Email, changed = c.Email, true
	}
	if c.Name != nil && *c.Name != s.Name {
		e.Name, changed = c.Name, true
	}
	if c.Roles != nil && !slices.Equal(c.Roles, s.Roles) {
		e.Roles, changed = c.Roles, true
	}
	if c.CredentialID != nil && (s.CredentialID == nil || *c.CredentialID != *s.CredentialID) {
		e.CredentialID, changed = c.CredentialID, true
	}
	if !changed {
		return nil
	}
	return []Event{e}
}

func decideActivate(s State, c Activate, now time.Time) ([]Event, error) {
	switch c.Method {
	case MethodToken, MethodAdmin, MethodAuto:
	default:
		// The method is written into the log for good; only the three of DESIGN §2.
		return nil, &ValidationError{Field: "method", Reason: "must be token, admin or auto"}
	}
	if c.Method != MethodToken {
		if s.Status == StatusActive {
			return nil, nil
		}
		return []Event{Activated{UserID: s.ID, ActivatedBy: c.By, Method: c.Method, CredentialID: c.CredentialID}}, nil
	}
	t, ok := s.Tokens[c.TokenHash]
	switch {
	case !ok || t.Status == TokenSuperseded || t.Status == TokenRevoked:
		return nil, ErrInvalidToken
	case t.Status == TokenUsed:
		return nil, ErrTokenUsed
	case t.Status == TokenExpired || !now.Before(t.ExpiresAt):
		return nil, ErrTokenExpired
	}
	return []Event{Activated{UserID: s.ID, ActivatedBy: c.By, Method: MethodToken, TokenHash: c.TokenHash, CredentialID: c.CredentialID}}, nil
}
