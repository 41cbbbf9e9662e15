package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
)

// RegisterInput is a registration as a client sends it.
type RegisterInput struct {
	Email    string
	Name     string
	Password string // optional
	Roles    []string
	// UserID, when not nil, is the id to give the user: a retried request
	// that names the same id (derived from its Idempotency-Key) finds the
	// user it made the first time and succeeds without appending again.
	UserID uuid.UUID
}

// Register creates a user and claims its address in one atomic append; of
// racing registrations for one address exactly one wins.
func (h *Handler) Register(ctx context.Context, meta Meta, in RegisterInput) (Result, error) {
	addr, err := user.NormalizeEmail(in.Email)
	if err != nil {
		return Result{}, err
	}
	name, err := user.NormalizeName(in.Name)
	if err != nil {
		return Result{}, err
	}
	roles, err := user.NormalizeRoles(in.Roles)
	if err != nil {
		return Result{}, err
	}
	id := in.UserID
	fresh := id == uuid.Nil // a new id has no stream yet; a client's may
	if fresh {
		if id, err = uuid.NewV7(); err != nil {
			return Result{}, err
		}
	}
	credID, err := h.storePassword(ctx, id, in.Password, in.Password != "")
	if err != nil {
		return Result{}, err
	}
	if meta.ActorID == "" {
		meta.ActorID = Anonymous
	}
	cmd := user.Register{UserID: id, Email: addr, Name: name, Roles: roles, CredentialID: credID}
	// Most addresses are new: the first try appends the claim expecting no
	// stream, which costs no read; the store refuses it if the address was
	// ever claimed, and the next try reads the claim.
	guess := true
	return h.execUserFrom(ctx, meta, id, nil, fresh, func(lu loadedUser, now time.Time) (change, error) {
		if lu.state.Exists && lu.state.Email == addr && in.UserID != uuid.Nil {
			return change{}, nil // the retry of a registration that was stored
		}
		guessed := guess
		guess = false
		owner, version := uuid.Nil, eventstore.NoStream
		if !guessed {
			var err error
			if owner, version, err = h.loadClaim(ctx, addr); err != nil {
				return change{}, err
			}
		}
		claim, err := email.Claim(owner, id)
		if err != nil {
			return change{}, ErrEmailTaken
		}
		if len(claim) == 0 {
			// This id holds the address already: its registration was
			// stored after the user stream was read. Read again.
			return change{}, fmt.Errorf("claim %s is the user's already: %w", email.Stream(addr), eventstore.ErrWrongVersion)
		}
		evs, err := user.Decide(lu.state, cmd, now)
		if err != nil {
			return change{}, err
		}
		req, err := claimRequest(meta, now, addr, version, claim[0])
		return change{events: evs, extra: []eventstore.AppendRequest{req}, guessed: guessed}, err
	})
}

// storePassword hashes a password into the credential store and returns the
// id the log will name. The row is written before the event that refers to
// it: if the append fails, an unreferenced row is left, never a dangling reference.
func (h *Handler) storePassword(ctx context.Context, userID uuid.UUID, password string, given bool) (*uuid.UUID, error) {
	if !given {
		return nil, nil
	}
	if err := user.ValidatePassword(password); err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), h.cost())
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	if err := h.creds.PutCredential(ctx, id, userID, string(hash)); err != nil {
		return nil, fmt.Errorf("store credential: %w", err)
	}
	return &id, nil
}

func (h *Handler) cost() int {
	if h.opts.PasswordCost == 0 {
		return bcrypt.DefaultCost
	}
	return h.opts.PasswordCost
}

// UpdateInput changes a profile; nil fields stay as they are.
type UpdateInput struct {
	Email    *string
	Name     *string
	Roles    []string
	Password *string
	// CurrentPassword proves a self change (see Update); empty means not
	// given. It is compared with the stored hash and kept nowhere.
	CurrentPassword string
}

// Update changes a user's profile. A new address is claimed and the old one
// released in the same atomic append. A new password revokes the user's
// other open sessions (all but the one the request came with).
//
// A self change — meta.ActorID names the user being changed, whatever the
// actor's roles — of the e-mail address or the password needs the user's
// current password in in.CurrentPassword: without it Update fails with
// ErrCurrentPasswordRequired, with a wrong one (or when the user has no
// password) with ErrInvalidCurrentPassword, and nothing is stored. A
// current password given with any other self change is checked too; on
// someone else's change (an admin's, a workflow's) it is ignored. The
// check runs against the state the append expects, before anything is
// written, new password hash included.
func (h *Handler) Update(ctx context.Context, meta Meta, id uuid.UUID, in UpdateInput, ifMatch *int64) (Result, error) {
	cmd := user.Update{By: meta.ActorID}
	if in.Email != nil {
		addr, err := user.NormalizeEmail(*in.Email)
		if err != nil {
			return Result{}, err
		}
		cmd.Email = &addr
	}
	if in.Name != nil {
		name, err := user.NormalizeName(*in.Name)
		if err != nil {
			return Result{}, err
		}
		cmd.Name = &name
	}
	if in.Roles != nil {
		roles, err := user.NormalizeRoles(in.Roles)
		if err != nil {
			return Result{}, err
		}
		cmd.Roles = roles
	}
	if in.Password != nil {
		if err := user.ValidatePassword(*in.Password); err != nil {
			return Result{}, err
		}
	}
	self := meta.ActorID == id.String()
	var proven *uuid.UUID // the credential in.CurrentPassword matched
	res, err := h.execUser(ctx, meta, id, ifMatch, func(lu loadedUser, now time.Time) (change, error) {
		// A user that is missing or deleted fails as it always has,
		// before any password is looked at.
		if _, err := user.Decide(lu.state, user.Update{}, now); err != nil {
			return change{}, err
		}
		if cmd.Roles != nil && !slices.Contains(cmd.Roles, user.RoleAdmin) && ownAdmin(meta, lu.state) {
			return change{}, ErrSelfLockout
		}
		if self {
			credential := in.Password != nil || (cmd.Email != nil && *cmd.Email != lu.state.Email)
			if credential && in.CurrentPassword == "" {
				return change{}, ErrCurrentPasswordRequired
			}
			// A retry after a conflict checks again only if the password
			// changed meanwhile: the proof must hold for the state appended to.
			if in.CurrentPassword != "" && (proven == nil || lu.state.CredentialID == nil || *proven != *lu.state.CredentialID) {
				if err := h.checkPassword(ctx, lu.state, in.CurrentPassword); err != nil {
					return change{}, err
				}
				proven = lu.state.CredentialID
			}
		}
		if in.Password != nil && cmd.CredentialID == nil {
			// Once, even across retries: the hash is kept before the event
			// that names it (see storePassword).
			credID, err := h.storePassword(ctx, id, *in.Password, true)
			if err != nil {
				return change{}, err
			}
			cmd.CredentialID = credID
		}
		evs, err := user.Decide(lu.state, cmd, now)
		if err != nil || len(evs) == 0 {
			return change{events: evs}, err
		}
		ch := change{events: evs}
		if up := evs[0].(user.Updated); up.Email != nil {
			owner, version, err := h.loadClaim(ctx, *up.Email)
			if err != nil {
				return change{}, err
			}
			claim, err := email.Claim(owner, id)
			if err != nil {
				return change{}, ErrEmailTaken
			}
			if len(claim) == 0 {
				// The address is this user's already, while the state read
				// before says otherwise: a concurrent change took it after
				// that read. Read again.
				return change{}, fmt.Errorf("claim %s is the user's already: %w", email.Stream(*up.Email), eventstore.ErrWrongVersion)
			}
			take, err := claimRequest(meta, now, *up.Email, version, claim[0])
			if err != nil {
				return change{}, err
			}
			release, err := h.releaseRequest(ctx, meta, now, lu.state)
			if err != nil {
				return change{}, err
			}
			ch.extra = append(ch.extra, take)
			ch.extra = append(ch.extra, release...)
		}
		return ch, nil
	})
	if in.Password == nil {
		return res, err
	}
	// A new password ends the user's other sessions: whoever held one
	// with the old password holds nothing now.
	return h.endSessions(ctx, meta, res, err, session.ReasonPasswordChanged)
}

// checkPassword compares password with the user's stored hash, at one
// bcrypt comparison's cost whether or not the user has a password (then
// against a hash no password matches, and the answer is no).
func (h *Handler) checkPassword(ctx context.Context, s user.State, password string) error {
	hash := h.dummyHash()
	if s.CredentialID != nil {
		stored, err := h.creds.Credential(ctx, *s.CredentialID)
		if err != nil {
			return fmt.Errorf("load credential: %w", err)
		}
		hash = []byte(stored)
	}
	match := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	// bcrypt reads 72 bytes at most, and no stored password is longer: a
	// longer one would match on its first 72 bytes alone.
	if !match || s.CredentialID == nil || len(password) > 72 {
		return ErrInvalidCurrentPassword
	}
	return nil
}

// releaseRequest frees the address a user holds, if it still holds it.
func (h *Handler) releaseRequest(ctx context.Context, meta Meta, now time.Time, s user.State) ([]eventstore.AppendRequest, error) {
	owner, version, err := h.loadClaim(ctx, s.Email)
	if err != nil {
		return nil, err
	}
	if owner != s.ID {
		return nil, nil
	}
	req, err := claimRequest(meta, now, s.Email, version, email.Released{UserID: s.ID})
	if err != nil {
		return nil, err
	}
	return []eventstore.AppendRequest{req}, nil
}

// ActivationToken is a freshly issued token: the only time it is seen raw.
type ActivationToken struct {
	Token     string
	ExpiresAt time.Time
	Result
}

// RequestActivation issues a new activation token; earlier unused ones stop working.
func (h *Handler) RequestActivation(ctx context.Context, meta Meta, id uuid.UUID, ifMatch *int64) (ActivationToken, error) {
	tok, hash, err := newToken(activationPrefix, id)
	if err != nil {
		return ActivationToken{}, err
	}
	expires := h.now().Add(h.opts.ActivationTokenDuration).Truncate(time.Microsecond)
	res, err := h.execUser(ctx, meta, id, ifMatch, decideUser(user.RequestActivation{TokenHash: hash, ExpiresAt: expires, By: meta.ActorID}))
	if err != nil {
		return ActivationToken{}, err
	}
	return ActivationToken{Token: tok, ExpiresAt: expires, Result: res}, nil
}

// ActivateWithToken redeems an activation token, optionally setting a password.
func (h *Handler) ActivateWithToken(ctx context.Context, meta Meta, token string, password *string) (Result, error) {
	id, hash, ok := parseToken(activationPrefix, token)
	if !ok {
		return Result{}, user.ErrInvalidToken
	}
	var credID *uuid.UUID
	if password != nil {
		// Check the token before hashing a password for it.
		lu, err := h.loadUser(ctx, id)
		if err != nil {
			return Result{}, err
		}
		if _, err := user.Decide(lu.state, user.Activate{Method: user.MethodToken, TokenHash: hash}, h.now()); err != nil {
			return Result{}, tokenError(err)
		}
		if credID, err = h.storePassword(ctx, id, *password, true); err != nil {
			return Result{}, err
		}
	}
	if meta.ActorID == "" {
		meta.ActorID = id.String()
	}
	res, err := h.execUser(ctx, meta, id, nil, decideUser(user.Activate{Method: user.MethodToken, TokenHash: hash, CredentialID: credID, By: meta.ActorID}))
	return res, tokenError(err)
}

// tokenError hides whether a user exists behind a token that does not verify.
func tokenError(err error) error {
	if errors.Is(err, user.ErrNotFound) {
		return user.ErrInvalidToken
	}
	return err
}

// Activate activates a user by an admin or by the auto-activation workflow.
func (h *Handler) Activate(ctx context.Context, meta Meta, id uuid.UUID, method string, ifMatch *int64) (Result, error) {
	return h.execUser(ctx, meta, id, ifMatch, decideUser(user.Activate{Method: method, By: meta.ActorID}))
}

// Deactivate makes a user inactive and revokes its sessions.
func (h *Handler) Deactivate(ctx context.Context, meta Meta, id uuid.UUID, reason string, ifMatch *int64) (Result, error) {
	if err := user.ValidateReason(reason); err != nil {
		return Result{}, err
	}
	res, err := h.execUser(ctx, meta, id, ifMatch, notOwnAdmin(meta, decideUser(user.Deactivate{By: meta.ActorID, Reason: reason})))
	return h.endSessions(ctx, meta, res, err, session.ReasonUserDeactivated)
}

// Suspend suspends a user and revokes its sessions.
func (h *Handler) Suspend(ctx context.Context, meta Meta, id uuid.UUID, reason string, ifMatch *int64) (Result, error) {
	if err := user.ValidateReason(reason); err != nil {
		return Result{}, err
	}
	res, err := h.execUser(ctx, meta, id, ifMatch, notOwnAdmin(meta, decideUser(user.Suspend{By: meta.ActorID, Reason: reason})))
	return h.endSessions(ctx, meta, res, err, session.ReasonUserSuspended)
}

// Delete ends a user for good, frees its address and revokes its sessions.
func (h *Handler) Delete(ctx context.Context, meta Meta, id uuid.UUID, reason string, ifMatch *int64) (Result, error) {
	if err := user.ValidateReason(reason); err != nil {
		return Result{}, err
	}
	res, err := h.execUser(ctx, meta, id, ifMatch, notOwnAdmin(meta, func(lu loadedUser, now time.Time) (change, error) {
		evs, err := user.Decide(lu.state, user.Delete{By: meta.ActorID, Reason: reason}, now)
		if err != nil {
			return change{}, err
		}
		release, err := h.releaseRequest(ctx, meta, now, lu.state)
		return change{events: evs, extra: release}, err
	}))
	return h.endSessions(ctx, meta, res, err, session.ReasonUserDeleted)
}

// endSessions revokes a user's open sessions right after the command that
// ends them, so the answer to the command already shows them closed. Tokens
// are refused from the moment the user event is stored whatever happens here
// (Authenticate checks the user), and the cleanup workflow finishes anything
// left undone, so a failure here is logged, not returned.
func (h *Handler) endSessions(ctx context.Context, meta Meta, res Result, err error, reason string) (Result, error) {
	if err != nil || res.Appended == 0 {
		return res, err
	}
	pos, rerr := h.RevokeUserSessions(ctx, meta, res.UserID, res.Position, reason)
	if rerr != nil {
		h.log.WarnContext(ctx, "revoke sessions after user command", "stream", UserStream(res.UserID), "err", rerr)
		return res, nil
	}
	if res.Position.Less(pos) {
		res.Position = pos
	}
	return res, nil
}

// ExpireActivationToken records that a pending token passed its expiry.
func (h *Handler) ExpireActivationToken(ctx context.Context, meta Meta, id uuid.UUID, tokenHash string) (Result, error) {
	return h.execUser(ctx, meta, id, nil, decideUser(user.ExpireToken{TokenHash: tokenHash}))
}

// UserState folds a user's stream, up to time at when it is not zero.
func (h *Handler) UserState(ctx context.Context, id uuid.UUID, at time.Time) (user.State, int64, error) {
	lu, err := h.loadUserUntil(ctx, id, at)
	if err != nil {
		return user.State{}, 0, err
	}
	if !lu.state.Exists {
		return user.State{}, lu.version, user.ErrNotFound
	}
	return lu.state, lu.version, nil
}

// EmailOwner returns the user holding an address, or user.ErrNotFound.
func (h *Handler) EmailOwner(ctx context.Context, address string) (uuid.UUID, error) {
	addr, err := user.NormalizeEmail(address)
	if err != nil {
		return uuid.Nil, err
	}
	owner, _, err := h.loadClaim(ctx, addr)
	if err != nil {
		return uuid.Nil, err
	}
	if owner == uuid.Nil {
		return uuid.Nil, user.ErrNotFound
	}
	return owner, nil
}
