package user

import (
	"time"

	"github.com/google/uuid"
)

// Status is where a user is in its life.
type Status string

// The statuses of DESIGN §3.
const (
	StatusPending   Status = "pending"
	StatusActive    Status = "active"
	StatusInactive  Status = "inactive"
	StatusSuspended Status = "suspended"
	StatusDeleted   Status = "deleted"
)

// TokenStatus is what became of an activation token.
type TokenStatus string

// Token statuses.
const (
	TokenPending    TokenStatus = "pending"
	TokenUsed       TokenStatus = "used"
	TokenSuperseded TokenStatus = "superseded"
	TokenRevoked    TokenStatus = "revoked"
	TokenExpired    TokenStatus = "expired"
)

// Token is an activation token as the aggregate knows it: by hash only.
type Token struct {
	Hash      string
	ExpiresAt time.Time
	Status    TokenStatus
}

// State is a user folded from its stream. The zero State is a user that does
// not exist yet.
type State struct {
	ID           uuid.UUID
	Exists       bool
	Email        string
	Name         string
	Roles        []string
	Status       Status
	CredentialID *uuid.UUID
	Tokens       map[string]Token
}

// Fold evolves the zero state through events.
func Fold(events []Event) State {
	var s State
	for _, e := range events {
		s = Evolve(s, e)
	}
	return s
}

// HasRole reports whether the user holds role.
func (s State) HasRole(role string) bool {
	for _, r := range s.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Evolve applies one event. It is total: an event that does not fit the state
// is applied as far as it goes, and unknown events leave the state as is.
func Evolve(s State, e Event) State {
	switch e := e.(type) {
	case Created:
		s = State{
			ID: e.UserID, Exists: true, Email: e.Email, Name: e.Name,
			Roles: append([]string(nil), e.Roles...), Status: StatusPending,
			CredentialID: e.CredentialID,
		}
	case Updated:
		if e.Email != nil {
			s.Email = *e.Email
		}
		if e.Name != nil {
			s.Name = *e.Name
		}
		if e.Roles != nil {
			s.Roles = append([]string(nil), e.Roles...)
		}
		if e.CredentialID != nil {
			s.CredentialID = e.CredentialID
		}
	case ActivationRequested:
		s.Tokens = s.withTokens(TokenPending, TokenSuperseded)
		s.Tokens[e.TokenHash] = Token{Hash: e.TokenHash, ExpiresAt: e.ExpiresAt, Status: TokenPending}
	case Activated:
		s.Status = StatusActive
		s.Tokens = s.withTokens(TokenPending, TokenRevoked)
		if t, ok := s.Tokens[e.TokenHash]; ok && e.Method == MethodToken {
			t.Status = TokenUsed
			s.Tokens[e.TokenHash] = t
		}
		if e.CredentialID != nil {
			s.CredentialID = e.CredentialID
		}
	case Deactivated:
		s.Status = StatusInactive
		s.Tokens = s.withTokens(TokenPending, TokenRevoked)
	case StatusChanged:
		s.Status = e.To
		s.Tokens = s.withTokens(TokenPending, TokenRevoked)
	case ActivationTokenExpired:
		if t, ok := s.Tokens[e.TokenHash]; ok && t.Status == TokenPending {
			s.Tokens = s.withTokens("", "")
			t.Status = TokenExpired
			s.Tokens[e.TokenHash] = t
		}
	case Deleted:
		s.Status = StatusDeleted
		s.Tokens = s.withTokens(TokenPending, TokenRevoked)
	}
	return s
}

// withTokens returns a copy of the token map with every token in status from
// moved to status to, so that states stay values that can be compared and kept.
func (s State) withTokens(from, to TokenStatus) map[string]Token {
	out := make(map[string]Token, len(s.Tokens)+1)
	for h, t := range s.Tokens {
		if from != "" && t.Status == from {
			t.Status = to
		}
		out[h] = t
	}
	return out
}

// PendingTokens returns the tokens still waiting to be used.
func (s State) PendingTokens() []Token {
	var out []Token
	for _, t := range s.Tokens {
		if t.Status == TokenPending {
			out = append(out, t)
		}
	}
	return out
}
