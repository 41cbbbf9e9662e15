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

func (p sessionsProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !p.handles(ev.Type) {
		return nil
	}
	d := decode(&ev)
	if d.err != nil {
		return d.err
	}
	id := sessionID(d.sess)
	if _, ok := d.sess.(session.LoggedIn); ok {
		// Upsert guarded by version: a replay of the log-in changes nothing.
		s, _ := nextSession(readmodels.Session{}, false, &d)
		return tx.PutSession(s)
	}
	s, err := tx.Session(id)
	if errors.Is(err, readmodels.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s, ok := nextSession(s, true, &d)
	if !ok {
		return nil
	}
	return tx.PutSession(s)
}

// sessionID is the session an auth.* event is about.
func sessionID(e session.Event) uuid.UUID {
	id, _ := sessionIDs(e)
	return id
}

// nextSession returns the row that session event d makes of s (found: the
// row exists), and false when d leaves it as it is. A log-in makes a new
// row unless the row's version is d's or later (PutSession's guard); the
// others close an open session once.
func nextSession(s readmodels.Session, found bool, d *event) (readmodels.Session, bool) {
	ev, at := d.rec, d.at
	var (
		status, reason string
		endedAt        = at
	)
	switch e := d.sess.(type) {
	case session.LoggedIn:
		if found && ev.Version <= s.Version {
			return s, false
		}
		return readmodels.Session{
			ID: e.SessionID, UserID: e.UserID, Status: SessionOpen,
			CreatedAt: at, ExpiresAt: e.ExpiresAt, Version: ev.Version,
		}, true
	case session.LoggedOut:
		status, reason = SessionLoggedOut, SessionLoggedOut
	case session.Expired:
		status, reason, endedAt = SessionExpired, SessionExpired, e.ExpiredAt.UTC()
	case session.Revoked:
		status, reason = SessionRevoked, e.Reason
	default:
		return s, false
	}
	if !found || ev.Version <= s.Version || s.Status != SessionOpen {
		return s, false
	}
	s.Status, s.EndReason, s.EndedAt, s.Version = status, reason, &endedAt, ev.Version
	return s, true
}

func (p sessionsProjection) folder() folder {
	return &rowFolder[readmodels.Session]{
		handles: p.handles,
		key: func(d *event) (uuid.UUID, bool) {
			if d.sess == nil {
				return uuid.Nil, false
			}
			return sessionID(d.sess), true
		},
		load: (*readmodels.Bulk).Sessions,
		next: nextSession,
		put:  (*readmodels.Bulk).PutSessions,
	}
}

func (sessionsProjection) handles(eventType string) bool { return session.IsType(eventType) }
