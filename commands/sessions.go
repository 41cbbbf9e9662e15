package commands

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
	"time"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
)

// NewSession is a fresh login: the only time its token is seen raw.
type NewSession struct {
	Token     string
	SessionID uuid.UUID
	UserID    uuid.UUID
	ExpiresAt time.Time
	Position  eventstore.Position
}

// dummyHash is compared against when no user matches, so that a login for an
// unknown address costs as much time as one with a wrong password: it is made
// once, at the handler's own bcrypt cost.
func (h *Handler) dummyHash() []byte {
	h.dummyOnce.Do(func() {
		h.dummy, _ = bcrypt.GenerateFromPassword([]byte("evident-no-such-user"), h.cost())
	})
	return h.dummy
}

// Login checks an e-mail/password pair against the write side and opens a
// session. Unknown address, wrong password and missing password are the same
// ErrInvalidCredentials; a right password for a user who is not active is
// user.ErrNotActive.
//
// The session is appended together with a check that the user's stream is
// still at the version the decision read: a deactivation, suspension,
// deletion or password change that lands in between refuses the append, and
// the login is decided again on the user as it now is. So a refused login
// has written nothing, and no session opens for a user who was no longer
// active when it was written.
func (h *Handler) Login(ctx context.Context, meta Meta, emailAddr, password string) (NewSession, error) {
	addr, err := user.NormalizeEmail(emailAddr)
	if err != nil {
		return NewSession{}, ErrInvalidCredentials
	}
	var out NewSession
	_, err = h.retry(ctx, func() (Result, error) {
		var err error
		out, err = h.login(ctx, meta, addr, password)
		return Result{}, err
	})
	return out, err
}

func (h *Handler) login(ctx context.Context, meta Meta, addr, password string) (NewSession, error) {
	owner, _, err := h.loadClaim(ctx, addr)
	if err != nil {
		return NewSession{}, err
	}
	var lu loadedUser
	if owner != uuid.Nil {
		if lu, err = h.loadUser(ctx, owner); err != nil {
			return NewSession{}, err
		}
	}
	// An unknown address has no credential, and costs the same bcrypt
	// comparison as a wrong password (see checkPassword).
	if err := h.checkPassword(ctx, lu.state, password); err != nil {
		if errors.Is(err, ErrInvalidCurrentPassword) {
			return NewSession{}, ErrInvalidCredentials
		}
		return NewSession{}, err
	}
	if lu.state.Status != user.StatusActive {
		return NewSession{}, user.ErrNotActive
	}
	sid := uuid.New()
	token, tokenHash, err := newToken(sessionPrefix, sid)
	if err != nil {
		return NewSession{}, err
	}
	now := h.now()
	expires := now.Add(h.opts.SessionDuration).Truncate(time.Microsecond)
	evs, err := session.Decide(session.State{}, session.Login{SessionID: sid, UserID: owner, TokenHash: tokenHash, ExpiresAt: expires}, now)
	if err != nil {
		return NewSession{}, err
	}
	if meta.ActorID == "" {
		meta.ActorID = owner.String()
	}
	data, err := encode(meta, now, session.SchemaVersion, evs)
	if err != nil {
		return NewSession{}, err
	}
	res, err := h.write(ctx,
		eventstore.AppendRequest{Stream: SessionStream(sid), Expected: eventstore.NoStream, Events: data},
		eventstore.AppendRequest{Stream: UserStream(owner), Expected: lu.version})
	if err != nil {
		return NewSession{}, fmt.Errorf("append %s: %w", SessionStream(sid), err)
	}
	return NewSession{Token: token, SessionID: sid, UserID: owner, ExpiresAt: expires, Position: res.Position}, nil
}

// Principal is who a valid bearer token speaks for.
type Principal struct {
	UserID    uuid.UUID
	SessionID uuid.UUID
	Roles     []string
}

// HasRole reports whether the principal holds role.
func (p Principal) HasRole(role string) bool {
	for _, r := range p.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Authenticate checks a session token against the write side: the session's
// own stream (open, unexpired, hash matches) and its user's stream (active).
// It never consults a read model, so a revocation, logout or deactivation
// that has been answered is in force at once.
func (h *Handler) Authenticate(ctx context.Context, token string) (Principal, error) {
	s, err := h.tokenSession(ctx, token)
	if err != nil {
		return Principal{}, err
	}
	if !s.Valid(h.now()) {
		return Principal{}, ErrUnauthenticated
	}
	lu, err := h.loadUser(ctx, s.UserID)
	if err != nil {
		return Principal{}, err
	}
	if !lu.state.Exists || lu.state.Status != user.StatusActive {
		return Principal{}, ErrUnauthenticated
	}
	return Principal{UserID: s.UserID, SessionID: s.ID, Roles: lu.state.Roles}, nil
}

// TokenHolder names the user and session a session token was issued for,
// whatever became of them since: the session may be closed or expired, the
// user inactive or deleted. It proves only that the caller holds a token
// this service gave out, and grants nothing: it is never a Principal. A token
// that was never issued (unknown session, wrong secret) is ErrUnauthenticated.
func (h *Handler) TokenHolder(ctx context.Context, token string) (userID, sessionID uuid.UUID, err error) {
	s, err := h.tokenSession(ctx, token)
	if err != nil {
		return uuid.Nil, uuid.Nil, err
	}
	return s.UserID, s.ID, nil
}

// tokenSession is the session a token was issued for, in whatever state it
// is now; ErrUnauthenticated when no session has that token.
func (h *Handler) tokenSession(ctx context.Context, token string) (session.State, error) {
	sid, hash, ok := parseToken(sessionPrefix, token)
	if !ok {
		return session.State{}, ErrUnauthenticated
	}
	s, _, err := h.loadSession(ctx, sid)
	if err != nil {
		return session.State{}, err
	}
	if !s.Exists || subtle.ConstantTimeCompare([]byte(s.TokenHash), []byte(hash)) != 1 {
		return session.State{}, ErrUnauthenticated
	}
	return s, nil
}

// SessionOwner returns the user a session belongs to.
func (h *Handler) SessionOwner(ctx context.Context, sid uuid.UUID) (uuid.UUID, error) {
	s, _, err := h.loadSession(ctx, sid)
	if err != nil {
		return uuid.Nil, err
	}
	if !s.Exists {
		return uuid.Nil, ErrSessionNotFound
	}
	return s.UserID, nil
}

// Logout closes a session at its holder's request.
func (h *Handler) Logout(ctx context.Context, meta Meta, sid uuid.UUID) (Result, error) {
	return h.execSession(ctx, meta, sid, session.Logout{})
}

// RevokeSession closes a session by someone else's decision.
func (h *Handler) RevokeSession(ctx context.Context, meta Meta, sid uuid.UUID, reason string) (Result, error) {
	if reason == "" {
		reason = session.ReasonRevoked
	}
	if err := user.ValidateReason(reason); err != nil {
		return Result{}, err
	}
	return h.execSession(ctx, meta, sid, session.Revoke{Reason: reason, By: meta.ActorID})
}

// ExpireSession records that a session outlived its expiry.
func (h *Handler) ExpireSession(ctx context.Context, meta Meta, sid uuid.UUID) (Result, error) {
	return h.execSession(ctx, meta, sid, session.Expire{})
}

func (h *Handler) execSession(ctx context.Context, meta Meta, sid uuid.UUID, c session.Command) (Result, error) {
	return h.retry(ctx, func() (Result, error) {
		s, version, err := h.loadSession(ctx, sid)
		if err != nil {
			return Result{}, err
		}
		now := h.now()
		evs, err := session.Decide(s, c, now)
		if errors.Is(err, session.ErrNotFound) {
			return Result{}, ErrSessionNotFound
		}
		if err != nil {
			return Result{}, err
		}
		if len(evs) == 0 {
			return Result{UserID: s.UserID, Version: version}, nil
		}
		data, err := encode(meta, now, session.SchemaVersion, evs)
		if err != nil {
			return Result{}, err
		}
		res, err := h.write(ctx, eventstore.AppendRequest{Stream: SessionStream(sid), Expected: version, Events: data})
		if err != nil {
			return Result{}, fmt.Errorf("append %s: %w", SessionStream(sid), err)
		}
		return Result{UserID: s.UserID, Position: res.Position, Version: res.Versions[0], Appended: len(data)}, nil
	})
}

// RevokeUserSessions revokes every open session of a user but the one the
// request came with (meta.SessionID), in appends of at
// most RevokeBatch sessions each so no single write outgrows the store. It
// first lets the sessions read model catch up to after (bounded), so that
// every login before the triggering event is seen; a login that lands later
// is caught by the cleanup workflow. Sessions closed meanwhile are skipped.
// It returns the position of the last revocation written, or of the event
// that closed a skipped session, whichever is later.
func (h *Handler) RevokeUserSessions(ctx context.Context, meta Meta, userID uuid.UUID, after eventstore.Position, reason string) (eventstore.Position, error) {
	if h.sessions == nil {
		return eventstore.Position{}, nil
	}
	if h.waiter != nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := h.waiter.WaitFor(wctx, after)
		cancel()
		if err != nil && ctx.Err() != nil {
			return eventstore.Position{}, ctx.Err()
		}
	}
	ids, err := h.sessions.OpenSessionIDs(ctx, userID)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("list open sessions: %w", err)
	}
	ids = slices.DeleteFunc(ids, func(id uuid.UUID) bool { return id == meta.SessionID })
	var last eventstore.Position
	for start := 0; start < len(ids); start += h.opts.RevokeBatch {
		batch := ids[start:min(start+h.opts.RevokeBatch, len(ids))]
		res, err := h.retry(ctx, func() (Result, error) { return h.revokeBatch(ctx, meta, batch, reason) })
		if err != nil {
			return last, err
		}
		if last.Less(res.Position) {
			last = res.Position
		}
	}
	return last, nil
}

func (h *Handler) revokeBatch(ctx context.Context, meta Meta, ids []uuid.UUID, reason string) (Result, error) {
	now := h.now()
	reqs := make([]eventstore.AppendRequest, 0, len(ids))
	// closedAt is where the sessions someone else closed meanwhile (the
	// cleanup workflow racing a deactivation) were closed: the caller's answer
	// must wait for those events too, or the read side still shows them open.
	var closedAt eventstore.Position
	for _, sid := range ids {
		s, version, last, err := h.loadSessionAt(ctx, sid)
		if err != nil {
			return Result{}, err
		}
		evs, err := session.Decide(s, session.Revoke{Reason: reason, By: meta.ActorID}, now)
		if err != nil || len(evs) == 0 {
			if closedAt.Less(last) {
				closedAt = last
			}
			continue // unknown or already closed: nothing to revoke
		}
		data, err := encode(meta, now, session.SchemaVersion, evs)
		if err != nil {
			return Result{}, err
		}
		reqs = append(reqs, eventstore.AppendRequest{Stream: SessionStream(sid), Expected: version, Events: data})
	}
	if len(reqs) == 0 {
		return Result{Position: closedAt}, nil
	}
	res, err := h.write(ctx, reqs...)
	if err != nil {
		return Result{}, fmt.Errorf("append revocations: %w", err)
	}
	pos := res.Position
	if pos.Less(closedAt) {
		pos = closedAt
	}
	return Result{Position: pos, Appended: len(reqs)}, nil
}

// endReason is the revocation reason of a session whose user is no longer
// active: the same reason the command that ended the user writes, whichever
// of the command, its workflow or a racing login revokes the session first.
func endReason(s user.Status) string {
	switch s {
	case user.StatusInactive:
		return session.ReasonUserDeactivated
	case user.StatusSuspended:
		return session.ReasonUserSuspended
	case user.StatusDeleted:
		return session.ReasonUserDeleted
	}
	return session.ReasonRevoked
}
