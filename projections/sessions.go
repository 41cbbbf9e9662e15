package projections

import (
	"errors"

	"evident/domain/session"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
)

type sessionsProjection struct{}

// Status values of the sessions table.
const (
	SessionOpen      = "open"
	SessionLoggedOut = "logged_out"
	SessionExpired   = "expired"
	SessionRevoked   = "revoked"
)

// Sessions projects auth.* events into the sessions table. A session is
// closed once: logged out (end_reason "logged_out"), expired ("expired") or
// revoked (the revocation's reason). It never touches the users table.
func Sessions() Projection { return sessionsProjection{} }

func (sessionsProjection) Name() string     { return NameSessions }
func (sessionsProjection) Tables() []string { return []string{"sessions"} }

func (sessionsProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !session.IsType(ev.Type) {
		return nil
	}
	md, err := metadata(ev)
	if err != nil {
		return err
	}
	e, err := session.Decode(ev.Type, md.SchemaVersion, ev.Data)
	if err != nil {
		return err
	}
	at := occurredAt(ev, md)
	var (
		id             uuid.UUID
		status, reason string
		endedAt        = at
	)
	switch e := e.(type) {
	case session.LoggedIn:
		return tx.PutSession(readmodels.Session{
			ID: e.SessionID, UserID: e.UserID, Status: SessionOpen,
			CreatedAt: at, ExpiresAt: e.ExpiresAt, Version: ev.Version,
		})
	case session.LoggedOut:
		id, status, reason = e.SessionID, SessionLoggedOut, SessionLoggedOut
	case session.Expired:
		id, status, reason, endedAt = e.SessionID, SessionExpired, SessionExpired, e.ExpiredAt.UTC()
	case session.Revoked:
		id, status, reason = e.SessionID, SessionRevoked, e.Reason
	default:
		return nil
	}
	s, err := tx.Session(id)
	if errors.Is(err, readmodels.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if ev.Version <= s.Version || s.Status != SessionOpen {
		return nil
	}
	s.Status, s.EndReason, s.EndedAt, s.Version = status, reason, &endedAt, ev.Version
	return tx.PutSession(s)
}
