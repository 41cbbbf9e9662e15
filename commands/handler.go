package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"

	"github.com/google/uuid"
)

// Store is the part of the event store the write side needs.
type Store interface {
	Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error)
	ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error)
}

// Credentials keeps password hashes outside the log, keyed by an id the log may name.
type Credentials interface {
	PutCredential(ctx context.Context, id, userID uuid.UUID, hash string) error
	Credential(ctx context.Context, id uuid.UUID) (string, error)
}

// OpenSessions lists a user's open sessions from the sessions read model.
type OpenSessions interface {
	OpenSessionIDs(ctx context.Context, userID uuid.UUID) ([]uuid.UUID, error)
}

// Waiter waits until the read side has processed a position.
type Waiter interface {
	WaitFor(ctx context.Context, pos eventstore.Position) error
}

// Options tune a Handler; the zero value works.
type Options struct {
	Now                     func() time.Time // default time.Now
	ActivationTokenDuration time.Duration    // default 24h
	SessionDuration         time.Duration    // default 24h
	MaxRetries              int              // conflict retries, default 5
	PasswordCost            int              // bcrypt cost, default bcrypt.DefaultCost
	RevokeBatch             int              // sessions revoked per append, default 100
	Logger                  *slog.Logger
	// Appended, when set, is told the type of every event stored (metrics).
	Appended func(eventType string)
}

// Handler runs commands against the event store.
type Handler struct {
	store    Store
	creds    Credentials
	sessions OpenSessions
	waiter   Waiter
	opts     Options
	log      *slog.Logger

	dummyOnce sync.Once
	dummy     []byte
}

// NewHandler wires a Handler. sessions and waiter may be nil: then a
// deactivation leaves session revocation to the cleanup workflow alone.
func NewHandler(store Store, creds Credentials, sessions OpenSessions, waiter Waiter, opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ActivationTokenDuration <= 0 {
		opts.ActivationTokenDuration = 24 * time.Hour
	}
	if opts.SessionDuration <= 0 {
		opts.SessionDuration = 24 * time.Hour
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 5
	}
	if opts.RevokeBatch <= 0 {
		opts.RevokeBatch = 100
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: store, creds: creds, sessions: sessions, waiter: waiter, opts: opts, log: log}
}

// Meta says who asks and why; it becomes every appended event's metadata.
type Meta struct {
	ActorID       string
	CorrelationID string
	CausationID   string
	RequestID     string
	// SessionID is the session the request came with (none for workflows
	// and start-up). It is kept out of the events; a command that ends a
	// user's sessions leaves this one open.
	SessionID uuid.UUID
}

// Actors that are not users.
const (
	System    = "system"    // workflows and start-up
	Anonymous = "anonymous" // a registration without a session
)

// Result tells where a command's events landed. When the command changed
// nothing, Position is the zero position and Version the stream's current one.
type Result struct {
	UserID   uuid.UUID
	Position eventstore.Position
	Version  int64
	Appended int
	// User is the user's state at Version, as the command left it (user
	// commands only; the zero State otherwise): the stream folded, without
	// reading it again.
	User user.State
}

// UserStream names a user's stream.
func UserStream(id uuid.UUID) string { return "user-" + id.String() }

// SessionStream names a session's stream.
func SessionStream(id uuid.UUID) string { return "session-" + id.String() }

func (h *Handler) now() time.Time { return h.opts.Now().UTC() }

// write appends reqs atomically and reports what was stored.
func (h *Handler) write(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	res, err := h.store.Append(ctx, reqs...)
	if err == nil && h.opts.Appended != nil {
		for _, r := range reqs {
			for _, e := range r.Events {
				h.opts.Appended(e.Type)
			}
		}
	}
	return res, err
}

// retry runs attempt until it does not fail with a version conflict, at most
// MaxRetries+1 times, sleeping a jittered, growing pause between tries.
func (h *Handler) retry(ctx context.Context, attempt func() (Result, error)) (Result, error) {
	for i := 0; ; i++ {
		r, err := attempt()
		if !errors.Is(err, eventstore.ErrWrongVersion) {
			return r, err
		}
		if i >= h.opts.MaxRetries {
			return Result{}, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		pause := time.Duration(1<<i)*time.Millisecond + rand.N(5*time.Millisecond)
		select {
		case <-ctx.Done():
			return Result{}, ctx.Err()
		case <-time.After(pause):
		}
	}
}

// encode stamps metadata on domain events.
func encode[E interface{ EventType() string }](meta Meta, now time.Time, schema int, events []E) ([]eventstore.EventData, error) {
	out := make([]eventstore.EventData, 0, len(events))
	for _, e := range events {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("event id: %w", err)
		}
		data, err := json.Marshal(e)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", e.EventType(), err)
		}
		md := eventstore.Metadata{
			EventID: id, OccurredAt: now, ActorID: meta.ActorID, CorrelationID: meta.CorrelationID,
			CausationID: meta.CausationID, RequestID: meta.RequestID, SchemaVersion: schema,
		}
		if md.CorrelationID == "" {
			md.CorrelationID = id.String()
		}
		if md.ActorID == "" {
			md.ActorID = System
		}
		mdb, err := json.Marshal(md)
		if err != nil {
			return nil, fmt.Errorf("encode metadata: %w", err)
		}
		out = append(out, eventstore.EventData{ID: id, Type: e.EventType(), Data: data, Metadata: mdb})
	}
	return out, nil
}

// loadedUser is a user folded from its stream, with the version read.
type loadedUser struct {
	state   user.State
	version int64
}

func (h *Handler) loadUser(ctx context.Context, id uuid.UUID) (loadedUser, error) {
	return h.loadUserUntil(ctx, id, time.Time{})
}

// loadUserUntil folds a user's stream; a non-zero until keeps only events
// that occurred at or before it.
func (h *Handler) loadUserUntil(ctx context.Context, id uuid.UUID, until time.Time) (loadedUser, error) {
	recs, err := h.store.ReadStream(ctx, UserStream(id), 0)
	if err != nil {
		return loadedUser{}, fmt.Errorf("read %s: %w", UserStream(id), err)
	}
	lu := loadedUser{version: eventstore.NoStream}
	for _, r := range recs {
		md, err := decodeMeta(r)
		if err != nil {
			return loadedUser{}, err
		}
		if !until.IsZero() && md.OccurredAt.After(until) {
			break
		}
		e, err := user.Decode(r.Type, md.SchemaVersion, r.Data)
		if err != nil {
			return loadedUser{}, fmt.Errorf("stream %s version %d: %w", r.Stream, r.Version, err)
		}
		lu.state = user.Evolve(lu.state, e)
		lu.version = r.Version
	}
	return lu, nil
}

func decodeMeta(r eventstore.RecordedEvent) (eventstore.Metadata, error) {
	var md eventstore.Metadata
	if len(r.Metadata) == 0 {
		return md, nil
	}
	if err := json.Unmarshal(r.Metadata, &md); err != nil {
		return md, fmt.Errorf("stream %s version %d: metadata: %w", r.Stream, r.Version, err)
	}
	return md, nil
}

// loadClaim folds an address's claim stream.
func (h *Handler) loadClaim(ctx context.Context, normalized string) (owner uuid.UUID, version int64, err error) {
	stream := email.Stream(normalized)
	recs, err := h.store.ReadStream(ctx, stream, 0)
	if err != nil {
		return uuid.Nil, 0, fmt.Errorf("read claim: %w", err)
	}
	events := make([]email.Event, 0, len(recs))
	version = eventstore.NoStream
	for _, r := range recs {
		e, err := email.Decode(r.Type, r.Data)
		if err != nil {
			return uuid.Nil, 0, err
		}
		events = append(events, e)
		version = r.Version
	}
	return email.Owner(events), version, nil
}

func (h *Handler) loadSession(ctx context.Context, id uuid.UUID) (session.State, int64, error) {
	s, version, _, err := h.loadSessionAt(ctx, id)
	return s, version, err
}

// loadSessionAt is loadSession that also returns the global position of the
// stream's last event (zero for an empty stream).
func (h *Handler) loadSessionAt(ctx context.Context, id uuid.UUID) (session.State, int64, eventstore.Position, error) {
	recs, err := h.store.ReadStream(ctx, SessionStream(id), 0)
	if err != nil {
		return session.State{}, 0, eventstore.Position{}, fmt.Errorf("read %s: %w", SessionStream(id), err)
	}
	var (
		s    session.State
		last eventstore.Position
	)
	version := eventstore.NoStream
	for _, r := range recs {
		md, err := decodeMeta(r)
		if err != nil {
			return session.State{}, 0, eventstore.Position{}, err
		}
		e, err := session.Decode(r.Type, md.SchemaVersion, r.Data)
		if err != nil {
			return session.State{}, 0, eventstore.Position{}, fmt.Errorf("stream %s version %d: %w", r.Stream, r.Version, err)
		}
		s = session.Evolve(s, e)
		version, last = r.Version, r.Position
	}
	return s, version, last, nil
}

// change is what one attempt at a user command decided.
type change struct {
	events []user.Event
	extra  []eventstore.AppendRequest // other streams written in the same atomic append
	// guessed says extra expects a stream state that was not read (a new
	// address has no claim stream): if the append is refused, decide is
	// called again at once, and must read this time, before any back-off.
	guessed bool
}

// execUser is the one code path of every user command: load, decide, append
// with the expected version read, retry on conflict. ifMatch, when not nil,
// makes the command conditional on the stream version and disables retries.
func (h *Handler) execUser(ctx context.Context, meta Meta, id uuid.UUID, ifMatch *int64,
	decide func(lu loadedUser, now time.Time) (change, error)) (Result, error) {
	return h.execUserFrom(ctx, meta, id, ifMatch, false, decide)
}

// execUserFrom is execUser; fresh says that id was made for this command
// just now (a new UUIDv7), so that its stream cannot exist yet: the first
// attempt skips reading it and appends with "no stream", which the store
// still checks. A retry reads it.
func (h *Handler) execUserFrom(ctx context.Context, meta Meta, id uuid.UUID, ifMatch *int64, fresh bool,
	decide func(lu loadedUser, now time.Time) (change, error)) (Result, error) {
	return h.retry(ctx, func() (Result, error) {
		lu := loadedUser{version: eventstore.NoStream}
		if !fresh {
			var err error
			if lu, err = h.loadUser(ctx, id); err != nil {
				return Result{}, err
			}
		}
		fresh = false
		if ifMatch != nil && *ifMatch != lu.version {
			if !lu.state.Exists {
				return Result{}, user.ErrNotFound
			}
			return Result{}, ErrPreconditionFailed
		}
		var (
			ch   change
			data []eventstore.EventData
			res  eventstore.AppendResult
			err  error
		)
		for {
			now := h.now()
			if ch, err = decide(lu, now); err != nil {
				return Result{}, err
			}
			if len(ch.events) == 0 {
				return Result{UserID: id, Version: lu.version, User: lu.state}, nil
			}
			if data, err = encode(meta, now, user.SchemaVersion, ch.events); err != nil {
				return Result{}, err
			}
			reqs := append([]eventstore.AppendRequest{{Stream: UserStream(id), Expected: lu.version, Events: data}}, ch.extra...)
			res, err = h.write(ctx, reqs...)
			if !ch.guessed || !errors.Is(err, eventstore.ErrWrongVersion) {
				break
			}
		}
		if err != nil {
			if ifMatch != nil && errors.Is(err, eventstore.ErrWrongVersion) {
				return Result{}, ErrPreconditionFailed
			}
			return Result{}, fmt.Errorf("append %s: %w", UserStream(id), err)
		}
		st := lu.state
		for _, e := range ch.events {
			st = user.Evolve(st, e)
		}
		return Result{UserID: id, Position: res.Position, Version: res.Versions[0], Appended: len(data), User: st}, nil
	})
}

// decideUser adapts user.Decide to execUser.
func decideUser(c user.Command) func(loadedUser, time.Time) (change, error) {
	return func(lu loadedUser, now time.Time) (change, error) {
		evs, err := user.Decide(lu.state, c, now)
		return change{events: evs}, err
	}
}

// notOwnAdmin refuses, with ErrSelfLockout, a decision that would end the
// acting admin's own account (see ErrSelfLockout).
func notOwnAdmin(meta Meta, decide func(loadedUser, time.Time) (change, error)) func(loadedUser, time.Time) (change, error) {
	return func(lu loadedUser, now time.Time) (change, error) {
		if ownAdmin(meta, lu.state) {
			return change{}, ErrSelfLockout
		}
		return decide(lu, now)
	}
}

// ownAdmin reports whether the actor is s, holding the admin role.
func ownAdmin(meta Meta, s user.State) bool {
	return s.Exists && meta.ActorID == s.ID.String() && slices.Contains(s.Roles, user.RoleAdmin)
}

// claimRequest builds the append that takes or frees an address in the same
// atomic write as the user event.
func claimRequest(meta Meta, now time.Time, normalized string, version int64, ev email.Event) (eventstore.AppendRequest, error) {
	data, err := encode(meta, now, 1, []email.Event{ev})
	if err != nil {
		return eventstore.AppendRequest{}, err
	}
	return eventstore.AppendRequest{Stream: email.Stream(normalized), Expected: version, Events: data}, nil
}
