package commands

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
)

// SessionCleanup is the process manager that ends the sessions of a user who
// is deactivated, suspended or deleted, and any session opened by a login
// that raced such a command. Seeing an event twice is harmless: revoking a
// closed session appends nothing.
type SessionCleanup struct {
	h       *Handler
	timeout time.Duration
}

// NewSessionCleanup returns the workflow; timeout bounds the handling of one
// event (default 30s), after which the runner retries it.
func NewSessionCleanup(h *Handler, timeout time.Duration) *SessionCleanup {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return &SessionCleanup{h: h, timeout: timeout}
}

// Name is the workflow's checkpoint key.
func (*SessionCleanup) Name() string { return "session_cleanup" }

// After names the projection that must have seen an event before the
// workflow handles it: it asks the sessions read model for open sessions.
func (*SessionCleanup) After() []string { return []string{"sessions"} }

// Handle reacts to one event.
func (w *SessionCleanup) Handle(ctx context.Context, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case user.TypeDeactivated, user.TypeStatusChanged, user.TypeDeleted, session.TypeLoggedIn:
	default:
		return nil // most events: nothing to decode
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	md, err := decodeMeta(ev)
	if err != nil {
		return err
	}
	meta := Meta{ActorID: System, CorrelationID: md.CorrelationID, CausationID: ev.ID.String()}
	switch ev.Type {
	case user.TypeDeactivated, user.TypeStatusChanged, user.TypeDeleted:
		e, err := user.Decode(ev.Type, md.SchemaVersion, ev.Data)
		if err != nil {
			return err
		}
		var id uuid.UUID
		reason := ""
		switch e := e.(type) {
		case user.Deactivated:
			id, reason = e.UserID, session.ReasonUserDeactivated
		case user.Deleted:
			id, reason = e.UserID, session.ReasonUserDeleted
		case user.StatusChanged:
			if e.To != user.StatusSuspended {
				return nil
			}
			id, reason = e.UserID, session.ReasonUserSuspended
		}
		_, err = w.h.RevokeUserSessions(ctx, meta, id, ev.Position, reason)
		return err
	case session.TypeLoggedIn:
		e, err := session.Decode(ev.Type, md.SchemaVersion, ev.Data)
		if err != nil {
			return err
		}
		in := e.(session.LoggedIn)
		lu, err := w.h.loadUser(ctx, in.UserID)
		if err != nil {
			return err
		}
		if lu.state.Status == user.StatusActive {
			return nil
		}
		_, err = w.h.RevokeSession(ctx, meta, in.SessionID, endReason(lu.state.Status))
		return err
	}
	return nil
}

// AutoActivation is the process manager that activates every new user with
// method auto. It is wired only when auto-activation is enabled.
type AutoActivation struct{ h *Handler }

// NewAutoActivation returns the workflow.
func NewAutoActivation(h *Handler) *AutoActivation { return &AutoActivation{h: h} }

// Name is the workflow's checkpoint key.
func (*AutoActivation) Name() string { return "auto_activation" }

// After names no projection: the workflow reads only the log.
func (*AutoActivation) After() []string { return nil }

// Handle activates the user of a user.created event; a user already active is left alone.
func (w *AutoActivation) Handle(ctx context.Context, ev eventstore.RecordedEvent) error {
	if ev.Type != user.TypeCreated {
		return nil
	}
	md, err := decodeMeta(ev)
	if err != nil {
		return err
	}
	e, err := user.Decode(ev.Type, md.SchemaVersion, ev.Data)
	if err != nil {
		return err
	}
	meta := Meta{ActorID: System, CorrelationID: md.CorrelationID, CausationID: ev.ID.String()}
	_, err = w.h.Activate(ctx, meta, e.(user.Created).UserID, user.MethodAuto, nil)
	if err == nil || isFinal(err) {
		return nil
	}
	return err
}

// isFinal reports domain outcomes a workflow accepts as done.
func isFinal(err error) bool {
	return errorsIs(err, user.ErrDeleted, user.ErrNotFound)
}

// Due lists what has passed its expiry, from the read side.
type Due interface {
	DueSessions(ctx context.Context, now time.Time, limit int) ([]readmodels.Session, error)
	DueActivationTokens(ctx context.Context, now time.Time, limit int) ([]readmodels.ActivationToken, error)
	NextDue(ctx context.Context) (time.Time, bool, error)
}

// Expiry is the scheduler that records session and activation-token expiry.
// Its schedule is the read model itself, so it survives restarts; the write
// side decides, so an expiry is never recorded twice.
type Expiry struct {
	h    *Handler
	due  Due
	tick time.Duration
	log  *slog.Logger
}

// NewExpiry returns the scheduler; tick is the longest it sleeps (default 1s).
func NewExpiry(h *Handler, due Due, tick time.Duration) *Expiry {
	if tick <= 0 {
		tick = time.Second
	}
	return &Expiry{h: h, due: due, tick: tick, log: h.log}
}

// Run records expiries until ctx ends.
func (x *Expiry) Run(ctx context.Context) error {
	for {
		if err := x.RunOnce(ctx); err != nil && ctx.Err() == nil {
			x.log.WarnContext(ctx, "expiry pass failed", "err", err)
		}
		wait := x.tick
		if next, ok, err := x.due.NextDue(ctx); err == nil && ok {
			if d := next.Sub(x.h.now()); d < wait {
				wait = max(d, 10*time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// RunOnce records every expiry due now.
func (x *Expiry) RunOnce(ctx context.Context) error {
	now := x.h.now()
	meta := Meta{ActorID: System}
	sessions, err := x.due.DueSessions(ctx, now, 500)
	if err != nil {
		return fmt.Errorf("due sessions: %w", err)
	}
	for _, s := range sessions {
		if _, err := x.h.ExpireSession(ctx, meta, s.ID); err != nil {
			return fmt.Errorf("expire session %s: %w", s.ID, err)
		}
	}
	tokens, err := x.due.DueActivationTokens(ctx, now, 500)
	if err != nil {
		return fmt.Errorf("due tokens: %w", err)
	}
	for _, t := range tokens {
		if _, err := x.h.ExpireActivationToken(ctx, meta, t.UserID, t.TokenHash); err != nil && !isFinal(err) {
			return fmt.Errorf("expire token of %s: %w", t.UserID, err)
		}
	}
	return nil
}
