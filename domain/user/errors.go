package user

import (
	"errors"
	"fmt"
)

// Business-rule violations. Callers map them with errors.Is.
var (
	ErrNotFound      = errors.New("user: not found")
	ErrExists        = errors.New("user: already exists")
	ErrDeleted       = errors.New("user: deleted")
	ErrAlreadyActive = errors.New("user: already active")
	ErrNotActive     = errors.New("user: not active")
	ErrInvalidToken  = errors.New("user: invalid activation token")
	ErrTokenExpired  = errors.New("user: activation token expired")
	ErrTokenUsed     = errors.New("user: activation token already used")
)

// ValidationError is a fault in a command's input.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}
