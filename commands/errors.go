package commands

import "errors"

// Errors of the command layer, besides the domain's own sentinels and
// *user.ValidationError, which pass through unchanged.
var (
	// ErrConflict means the stream kept moving under us after every retry.
	ErrConflict = errors.New("commands: concurrent modification, retry")
	// ErrPreconditionFailed means If-Match named a version the stream is no longer at.
	ErrPreconditionFailed = errors.New("commands: stream version does not match If-Match")
	// ErrEmailTaken means another user holds the normalised address.
	ErrEmailTaken = errors.New("commands: email already registered")
	// ErrInvalidCredentials means the e-mail/password pair did not match.
	ErrInvalidCredentials = errors.New("commands: invalid credentials")
	// ErrUnauthenticated means a bearer token is missing, malformed, unknown,
	// ended, expired, or belongs to a user who is no longer active.
	ErrUnauthenticated = errors.New("commands: not authenticated")
	// ErrCurrentPasswordRequired means a user changing their own e-mail
	// address or password did not give their current password.
	ErrCurrentPasswordRequired = errors.New("commands: current password required")
	// ErrInvalidCurrentPassword means the current password a user gave to
	// change their own profile does not match the one stored (or they have
	// none). It is not ErrInvalidCredentials: the session stays valid.
	ErrInvalidCurrentPassword = errors.New("commands: current password does not match")
	// ErrSelfLockout means an admin tried to take their own admin rights
	// away: drop their own admin role, or deactivate, suspend or delete
	// themself. Another admin must, so that one slip cannot leave the
	// service with no one able to run it.
	ErrSelfLockout = errors.New("commands: an admin cannot end their own account or admin role")
	// ErrSessionNotFound means no session has that id.
	ErrSessionNotFound = errors.New("commands: session not found")
)

func errorsIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
