package commands_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"evident/commands"
	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
	"evident/readmodels"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

type fixture struct {
	h      *commands.Handler
	events *sqlite.Store
	rm     *readmodels.Store
	now    time.Time
	mu     sync.Mutex
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// newFixture wires a Handler over a real SQLite file. No projection runs:
// the write side must stand on its own.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "evident.db"))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	events, err := sqlite.New(db)
	require.NoError(t, err)
	rm, err := readmodels.Open(ctx, "sqlite", db.Write, db.Read)
	require.NoError(t, err)
	require.NoError(t, rm.Migrate(ctx))
	f := &fixture{events: events, rm: rm, now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	f.h = commands.NewHandler(events, rm, rm, nil, commands.Options{
		Now: f.clock, PasswordCost: bcrypt.MinCost, SessionDuration: time.Hour, ActivationTokenDuration: time.Hour,
	})
	return f
}

var admin = commands.Meta{ActorID: "admin-1"}

func (f *fixture) activeUser(t *testing.T, email, password string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: email, Name: "Someone", Password: password})
	require.NoError(t, err)
	_, err = f.h.Activate(ctx, admin, res.UserID, user.MethodAdmin, nil)
	require.NoError(t, err)
	return res.UserID
}

func (f *fixture) allEvents(t *testing.T) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := f.events.ReadAll(context.Background(), eventstore.Position{}, 100000)
	require.NoError(t, err)
	return evs
}

func TestRacingRegistrationsOneWinner(t *testing.T) {
	f := newFixture(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			// Case and spaces differ; the normalised address is one.
			addr := []string{"Race@Example.org", " race@example.org ", "RACE@EXAMPLE.ORG"}[i%3]
			_, errs[i] = f.h.Register(context.Background(), admin, commands.RegisterInput{Email: addr, Name: "R"})
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
			continue
		}
		assert.ErrorIs(t, err, commands.ErrEmailTaken)
	}
	assert.Equal(t, 1, wins)
	created := 0
	for _, e := range f.allEvents(t) {
		if e.Type == user.TypeCreated {
			created++
		}
	}
	assert.Equal(t, 1, created)
}

func TestDeletedUserFreesAddress(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "gone@example.org", Name: "G"})
	require.NoError(t, err)
	_, err = f.h.Register(ctx, admin, commands.RegisterInput{Email: "gone@example.org", Name: "G2"})
	require.ErrorIs(t, err, commands.ErrEmailTaken)
	_, err = f.h.Delete(ctx, admin, res.UserID, "test", nil)
	require.NoError(t, err)
	_, err = f.h.Register(ctx, admin, commands.RegisterInput{Email: "gone@example.org", Name: "G3"})
	require.NoError(t, err)
	_, err = f.h.Deactivate(ctx, admin, res.UserID, "", nil)
	assert.ErrorIs(t, err, user.ErrDeleted)
}

func TestEmailChangeMovesTheClaim(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "a@example.org", Name: "A"})
	require.NoError(t, err)
	_, err = f.h.Register(ctx, admin, commands.RegisterInput{Email: "b@example.org", Name: "B"})
	require.NoError(t, err)
	taken := "B@example.org"
	_, err = f.h.Update(ctx, admin, a.UserID, commands.UpdateInput{Email: &taken}, nil)
	require.ErrorIs(t, err, commands.ErrEmailTaken)
	fresh := "c@example.org"
	_, err = f.h.Update(ctx, admin, a.UserID, commands.UpdateInput{Email: &fresh}, nil)
	require.NoError(t, err)
	_, err = f.h.Register(ctx, admin, commands.RegisterInput{Email: "a@example.org", Name: "A2"})
	assert.NoError(t, err, "the old address is free again")
	_, err = f.h.Register(ctx, admin, commands.RegisterInput{Email: "c@example.org", Name: "C"})
	assert.ErrorIs(t, err, commands.ErrEmailTaken)
}

func TestIfMatch(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "m@example.org", Name: "M"})
	require.NoError(t, err)
	stale := res.Version
	name := "New"
	r2, err := f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Name: &name}, &stale)
	require.NoError(t, err)
	assert.Equal(t, stale+1, r2.Version)
	other := "Other"
	_, err = f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Name: &other}, &stale)
	assert.ErrorIs(t, err, commands.ErrPreconditionFailed)
}

// TestSecretsNeverEnterTheLog runs every command that handles a secret and
// then searches the whole log for the raw values.
func TestSecretsNeverEnterTheLog(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const pw1, pw2, pw3, pw4 = "first-password-1", "second-password-2", "third-password-3", "fourth-password-4"
	const wrong = "a-wrong-current-password"
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "s@example.org", Name: "S", Password: pw1})
	require.NoError(t, err)
	tok, err := f.h.RequestActivation(ctx, admin, res.UserID, nil)
	require.NoError(t, err)
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, tok.Token, ptr(pw2))
	require.NoError(t, err)
	_, err = f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Password: ptr(pw3)}, nil)
	require.NoError(t, err)
	sess, err := f.h.Login(ctx, commands.Meta{}, "s@example.org", pw3)
	require.NoError(t, err)
	self := commands.Meta{ActorID: res.UserID.String()}
	_, err = f.h.Update(ctx, self, res.UserID, commands.UpdateInput{Name: ptr("S2"), CurrentPassword: wrong}, nil)
	require.ErrorIs(t, err, commands.ErrInvalidCurrentPassword)
	_, err = f.h.Update(ctx, self, res.UserID, commands.UpdateInput{Password: ptr(pw4), CurrentPassword: pw3}, nil)
	require.NoError(t, err)

	secrets := []string{pw1, pw2, pw3, pw4, wrong, tok.Token, sess.Token}
	evs := f.allEvents(t)
	require.NotEmpty(t, evs)
	for _, e := range evs {
		for _, s := range secrets {
			assert.NotContains(t, string(e.Data), s, "event %s", e.Type)
			assert.NotContains(t, string(e.Metadata), s, "event %s", e.Type)
		}
	}
	// And the hashes that are kept are not the bare secret's prefix either.
	assert.True(t, strings.HasPrefix(tok.Token, "evat_"))
}

func TestLoginChecks(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.activeUser(t, "l@example.org", "right-password")
	_, err := f.h.Login(ctx, commands.Meta{}, "l@example.org", "wrong-password")
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials)
	_, err = f.h.Login(ctx, commands.Meta{}, "nobody@example.org", "right-password")
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials)
	_, err = f.h.Login(ctx, commands.Meta{}, "not an address", "right-password")
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials)

	// bcrypt reads 72 bytes: a longer attempt that starts with the right
	// 72 would match on them alone, though no password is that long.
	long := strings.Repeat("x", 72)
	f.activeUser(t, "long@example.org", long)
	_, err = f.h.Login(ctx, commands.Meta{}, "long@example.org", long+"anything")
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials, "72 right bytes and more")
	_, err = f.h.Login(ctx, commands.Meta{}, "long@example.org", long)
	assert.NoError(t, err)

	s, err := f.h.Login(ctx, commands.Meta{}, " L@EXAMPLE.org", "right-password")
	require.NoError(t, err)
	p, err := f.h.Authenticate(ctx, s.Token)
	require.NoError(t, err)
	assert.Equal(t, id, p.UserID)

	_, err = f.h.Suspend(ctx, admin, id, "", nil)
	require.NoError(t, err)
	_, err = f.h.Login(ctx, commands.Meta{}, "l@example.org", "right-password")
	assert.ErrorIs(t, err, user.ErrNotActive)
}

// TestTokensRefusedAtOnce: with no projection running at all, every way of
// ending a user or a session makes its token fail immediately.
func TestTokensRefusedAtOnce(t *testing.T) {
	ends := map[string]func(f *fixture, id uuid.UUID, s commands.NewSession) error{
		"deactivate": func(f *fixture, id uuid.UUID, _ commands.NewSession) error {
			_, err := f.h.Deactivate(context.Background(), admin, id, "", nil)
			return err
		},
		"suspend": func(f *fixture, id uuid.UUID, _ commands.NewSession) error {
			_, err := f.h.Suspend(context.Background(), admin, id, "", nil)
			return err
		},
		"delete": func(f *fixture, id uuid.UUID, _ commands.NewSession) error {
			_, err := f.h.Delete(context.Background(), admin, id, "", nil)
			return err
		},
		"logout": func(f *fixture, _ uuid.UUID, s commands.NewSession) error {
			_, err := f.h.Logout(context.Background(), commands.Meta{}, s.SessionID)
			return err
		},
		"revoke": func(f *fixture, _ uuid.UUID, s commands.NewSession) error {
			_, err := f.h.RevokeSession(context.Background(), admin, s.SessionID, "")
			return err
		},
		"expiry": func(f *fixture, _ uuid.UUID, _ commands.NewSession) error {
			f.advance(time.Hour)
			return nil
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			id := f.activeUser(t, "t@example.org", "password-123")
			s, err := f.h.Login(ctx, commands.Meta{}, "t@example.org", "password-123")
			require.NoError(t, err)
			_, err = f.h.Authenticate(ctx, s.Token)
			require.NoError(t, err)
			require.NoError(t, end(f, id, s))
			_, err = f.h.Authenticate(ctx, s.Token)
			assert.ErrorIs(t, err, commands.ErrUnauthenticated)

			// The spent token still names whom it was issued to, and grants nothing.
			uid, sid, err := f.h.TokenHolder(ctx, s.Token)
			require.NoError(t, err)
			assert.Equal(t, id, uid)
			assert.Equal(t, s.SessionID, sid)
		})
	}
}

func TestAuthenticateRejectsForgedTokens(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.activeUser(t, "f@example.org", "password-123")
	s, err := f.h.Login(ctx, commands.Meta{}, "f@example.org", "password-123")
	require.NoError(t, err)
	forged := s.Token[:len(s.Token)-2] + "AA"
	if forged == s.Token {
		forged = s.Token[:len(s.Token)-2] + "BB"
	}
	for _, tok := range []string{"", "evs_", "evs_!!!", forged, "evat_" + strings.TrimPrefix(s.Token, "evs_"), s.Token + "x"} {
		_, err := f.h.Authenticate(ctx, tok)
		assert.ErrorIs(t, err, commands.ErrUnauthenticated, "token %q", tok)
		_, _, err = f.h.TokenHolder(ctx, tok)
		assert.ErrorIs(t, err, commands.ErrUnauthenticated, "holder of token %q", tok)
	}
}

func TestActivationTokenLifecycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "a@example.org", Name: "A"})
	require.NoError(t, err)
	old, err := f.h.RequestActivation(ctx, admin, res.UserID, nil)
	require.NoError(t, err)
	cur, err := f.h.RequestActivation(ctx, admin, res.UserID, nil)
	require.NoError(t, err)

	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, old.Token, nil)
	assert.ErrorIs(t, err, user.ErrInvalidToken, "superseded")
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, "evat_garbage", nil)
	assert.ErrorIs(t, err, user.ErrInvalidToken, "malformed")
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, cur.Token, ptr("short"))
	var ve *user.ValidationError
	assert.ErrorAs(t, err, &ve, "a bad password is refused before the token is spent")
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, cur.Token, nil)
	require.NoError(t, err)
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, cur.Token, nil)
	assert.ErrorIs(t, err, user.ErrTokenUsed)

	// Expiry: a token one hour old is refused with token_expired, and the
	// expiry workflow records it once.
	b, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "b@example.org", Name: "B"})
	require.NoError(t, err)
	tb, err := f.h.RequestActivation(ctx, admin, b.UserID, nil)
	require.NoError(t, err)
	f.advance(time.Hour)
	_, err = f.h.ActivateWithToken(ctx, commands.Meta{}, tb.Token, nil)
	assert.ErrorIs(t, err, user.ErrTokenExpired)
	r1, err := f.h.ExpireActivationToken(ctx, commands.Meta{ActorID: commands.System}, b.UserID, commands.HashToken(tb.Token))
	require.NoError(t, err)
	assert.Equal(t, 1, r1.Appended)
	r2, err := f.h.ExpireActivationToken(ctx, commands.Meta{ActorID: commands.System}, b.UserID, commands.HashToken(tb.Token))
	require.NoError(t, err)
	assert.Equal(t, 0, r2.Appended, "never expired twice")
}

func TestConflictRetriesAreBounded(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "c@example.org", Name: "C"})
	require.NoError(t, err)
	// Many writers on one stream: every one either lands or reports a conflict, never anything else.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 16 {
		wg.Go(func() {
			name := "name-" + string(rune('a'+i))
			_, err := f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Name: &name}, nil)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else if !errors.Is(err, commands.ErrConflict) {
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	assert.Positive(t, ok)
	evs, err := f.events.ReadStream(ctx, commands.UserStream(res.UserID), 0)
	require.NoError(t, err)
	for i, e := range evs {
		assert.Equal(t, int64(i), e.Version, "contiguous versions")
	}
}

func ptr[T any](v T) *T { return &v }

// interleaving is the real store with one deletion slipped in just before
// the first session append, as a racing admin would.
type interleaving struct {
	*sqlite.Store
	before func()
	once   sync.Once
}

func (s *interleaving) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if strings.HasPrefix(reqs[0].Stream, "session-") {
		s.once.Do(s.before)
	}
	return s.Store.Append(ctx, reqs...)
}

// A login is decided on its user's stream and written with a check that the
// stream has not moved. Whatever lands in between is seen: an end of the
// user refuses the login with nothing written (C07: a refused command has
// appended nothing), and a change that leaves the user active lets it
// through on the second try, once.
func TestLoginRacingItsUserIsDecidedAgain(t *testing.T) {
	name := "Renamed"
	for _, tc := range []struct {
		name    string
		race    func(h *commands.Handler, id uuid.UUID) error
		want    error
		session int
	}{
		{"deactivated", func(h *commands.Handler, id uuid.UUID) error {
			_, err := h.Deactivate(context.Background(), admin, id, "raced", nil)
			return err
		}, user.ErrNotActive, 0},
		{"suspended", func(h *commands.Handler, id uuid.UUID) error {
			_, err := h.Suspend(context.Background(), admin, id, "raced", nil)
			return err
		}, user.ErrNotActive, 0},
		{"deleted", func(h *commands.Handler, id uuid.UUID) error {
			_, err := h.Delete(context.Background(), admin, id, "raced", nil)
			return err
		}, commands.ErrInvalidCredentials, 0},
		{"renamed", func(h *commands.Handler, id uuid.UUID) error {
			_, err := h.Update(context.Background(), admin, id, commands.UpdateInput{Name: &name}, nil)
			return err
		}, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			id := f.activeUser(t, "race@example.org", "password-123")
			store := &interleaving{Store: f.events}
			h := commands.NewHandler(store, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
			store.before = func() { require.NoError(t, tc.race(f.h, id)) }

			_, err := h.Login(ctx, commands.Meta{}, "race@example.org", "password-123")
			if tc.want == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.want)
			}
			var sessionEvents int
			for _, e := range f.allEvents(t) {
				if strings.HasPrefix(e.Stream, "session-") {
					sessionEvents++
				}
			}
			assert.Equal(t, tc.session, sessionEvents, "session events written")
		})
	}
}

// readCounter is the real event store, counting the streams read.
type readCounter struct {
	commands.Store
	mu    sync.Mutex
	reads map[string]int
}

func (c *readCounter) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	c.mu.Lock()
	c.reads[stream]++
	c.mu.Unlock()
	return c.Store.ReadStream(ctx, stream, from)
}

// A registration whose id the handler makes up has no stream to read; one
// whose id the client gave (a retried request) reads it and finds its user.
// Either way the result carries the user as the command left it.
func TestRegisterReadsTheUserStreamOnlyForAGivenID(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rc := &readCounter{Store: f.events, reads: map[string]int{}}
	h := commands.NewHandler(rc, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})

	res, err := h.Register(ctx, admin, commands.RegisterInput{Email: "new@example.org", Name: "New"})
	require.NoError(t, err)
	assert.Zero(t, rc.reads[commands.UserStream(res.UserID)], "reads of a stream made up just now")
	assert.Equal(t, user.State{ID: res.UserID, Exists: true, Email: "new@example.org", Name: "New",
		Roles: []string{user.RoleMember}, Status: user.StatusPending}, res.User)
	st, version, err := h.UserState(ctx, res.UserID, time.Time{})
	require.NoError(t, err)
	assert.Equal(t, st, res.User, "the result is the stream's state")
	assert.Equal(t, version, res.Version)

	given := uuid.Must(uuid.NewV7())
	in := commands.RegisterInput{Email: "given@example.org", Name: "Given", UserID: given}
	first, err := h.Register(ctx, admin, in)
	require.NoError(t, err)
	again, err := h.Register(ctx, admin, in)
	require.NoError(t, err, "the retry finds the user it made")
	assert.Equal(t, 2, rc.reads[commands.UserStream(given)])
	assert.True(t, again.Position.IsZero(), "nothing appended again")
	assert.Equal(t, first.User, again.User)
	assert.Equal(t, first.Version, again.Version)
}

// A new address is claimed without reading its claim stream: the store's
// "no stream" check is the read. An address claimed before (taken, or freed
// by a deletion) is refused by that check, read once, and decided on what
// the log holds; a refused registration leaves nothing in the log.
func TestRegisterReadsTheClaimOnlyWhenTheAddressWasClaimed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rc := &readCounter{Store: f.events, reads: map[string]int{}}
	h := commands.NewHandler(rc, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
	claim := email.Stream("c@example.org")

	first, err := h.Register(ctx, admin, commands.RegisterInput{Email: "c@example.org", Name: "C"})
	require.NoError(t, err)
	assert.Zero(t, rc.reads[claim], "a new address is not read")

	before := len(f.allEvents(t))
	_, err = h.Register(ctx, admin, commands.RegisterInput{Email: " C@Example.org", Name: "C2"})
	require.ErrorIs(t, err, commands.ErrEmailTaken)
	assert.Equal(t, 1, rc.reads[claim], "a taken address is read once")
	assert.Len(t, f.allEvents(t), before, "a refused registration appends nothing")

	_, err = h.Delete(ctx, admin, first.UserID, "test", nil)
	require.NoError(t, err)
	rc.reads[claim] = 0
	again, err := h.Register(ctx, admin, commands.RegisterInput{Email: "c@example.org", Name: "C3"})
	require.NoError(t, err, "a freed address can be claimed again")
	assert.Equal(t, 1, rc.reads[claim])
	var versions []int64
	for _, e := range f.allEvents(t) {
		if e.Stream == claim {
			versions = append(versions, e.Version)
		}
	}
	assert.Equal(t, []int64{0, 1, 2}, versions, "claimed, released, claimed again")
	st, _, err := h.UserState(ctx, again.UserID, time.Time{})
	require.NoError(t, err)
	assert.Equal(t, "c@example.org", st.Email)
}

// A session opened while its user was being ended is revoked by the cleanup
// workflow (or by the racing login) with the reason of what ended the user,
// the same reason the command itself writes: the answer must not depend on
// who revokes first.
func TestLateRevocationGivesTheCommandsReason(t *testing.T) {
	cases := []struct {
		name   string
		end    func(f *fixture, id uuid.UUID) error
		reason string
	}{
		{"deactivate", func(f *fixture, id uuid.UUID) error {
			_, err := f.h.Deactivate(context.Background(), admin, id, "", nil)
			return err
		}, session.ReasonUserDeactivated},
		{"suspend", func(f *fixture, id uuid.UUID) error {
			_, err := f.h.Suspend(context.Background(), admin, id, "", nil)
			return err
		}, session.ReasonUserSuspended},
		{"delete", func(f *fixture, id uuid.UUID) error {
			_, err := f.h.Delete(context.Background(), admin, id, "", nil)
			return err
		}, session.ReasonUserDeleted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			id := f.activeUser(t, tc.name+"@example.org", "password-123")
			s, err := f.h.Login(ctx, commands.Meta{}, tc.name+"@example.org", "password-123")
			require.NoError(t, err)
			// No projection runs here: the command finds no open session in
			// the read model, as when the login's row was not projected yet.
			require.NoError(t, tc.end(f, id))
			recs, err := f.events.ReadStream(ctx, commands.SessionStream(s.SessionID), 0)
			require.NoError(t, err)
			require.Len(t, recs, 1)
			require.NoError(t, commands.NewSessionCleanup(f.h, 0).Handle(ctx, recs[0]))

			recs, err = f.events.ReadStream(ctx, commands.SessionStream(s.SessionID), 0)
			require.NoError(t, err)
			require.Len(t, recs, 2, "the workflow revoked the session")
			ev, err := session.Decode(recs[1].Type, session.SchemaVersion, recs[1].Data)
			require.NoError(t, err)
			assert.Equal(t, tc.reason, ev.(session.Revoked).Reason)
		})
	}
}

// hooked is the real event store, running before once, just before the
// first read (or, with appends set, the first append) of a stream whose
// name has the given prefix.
type hooked struct {
	commands.Store
	prefix  string
	appends bool
	before  func()
	once    sync.Once
}

func (s *hooked) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	if !s.appends && strings.HasPrefix(stream, s.prefix) {
		s.once.Do(s.before)
	}
	return s.Store.ReadStream(ctx, stream, from)
}

func (s *hooked) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if s.appends && strings.HasPrefix(reqs[0].Stream, s.prefix) {
		s.once.Do(s.before)
	}
	return s.Store.Append(ctx, reqs...)
}

// Two identical e-mail changes race: the second read the user before the
// first was stored and the address's claim after, so the claim is the
// user's already while its state says otherwise. It reads again and finds
// nothing to do, instead of failing (it used to index an empty claim).
func TestRacingIdenticalEmailChanges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "old@example.org", Name: "O"})
	require.NoError(t, err)
	addr := "new@example.org"
	store := &hooked{Store: f.events, prefix: email.StreamPrefix}
	h := commands.NewHandler(store, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
	store.before = func() {
		_, err := f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Email: &addr}, nil)
		require.NoError(t, err)
	}
	r, err := h.Update(ctx, admin, res.UserID, commands.UpdateInput{Email: &addr}, nil)
	require.NoError(t, err)
	assert.Equal(t, addr, r.User.Email)
	assert.Zero(t, r.Appended, "the first change did it all")

	// With If-Match on the version it read, the same race is a failed precondition.
	store = &hooked{Store: f.events, prefix: email.StreamPrefix}
	h = commands.NewHandler(store, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
	other := "other@example.org"
	store.before = func() {
		_, err := f.h.Update(ctx, admin, res.UserID, commands.UpdateInput{Email: &other}, nil)
		require.NoError(t, err)
	}
	v := r.Version
	_, err = h.Update(ctx, admin, res.UserID, commands.UpdateInput{Email: &other}, &v)
	require.ErrorIs(t, err, commands.ErrPreconditionFailed)
}

// The same race on a registration retried with the id it was given: the
// retry read the (empty) user stream before the first attempt was stored,
// and the claim after its append was refused. It reads again and answers
// as the retry of a stored registration, not "address taken".
func TestRacingRetriedRegistration(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	in := commands.RegisterInput{Email: "retry@example.org", Name: "R", UserID: uuid.Must(uuid.NewV7())}
	store := &hooked{Store: f.events, prefix: commands.UserStream(in.UserID), appends: true}
	h := commands.NewHandler(store, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
	var first commands.Result
	store.before = func() {
		var err error
		first, err = f.h.Register(ctx, admin, in)
		require.NoError(t, err)
	}
	again, err := h.Register(ctx, admin, in)
	require.NoError(t, err)
	assert.Equal(t, first.User, again.User)
	assert.Equal(t, first.Version, again.Version)
	assert.Zero(t, again.Appended)
}

// The cleanup workflow sees every event of the log and acts on four types:
// the others are passed over before anything of them is decoded (a
// registration's events cost it nothing), while one of its own that cannot
// be read is still an error, to be retried and parked.
func TestSessionCleanupReadsOnlyItsOwnEvents(t *testing.T) {
	f := newFixture(t)
	w := commands.NewSessionCleanup(f.h, time.Second)
	bad := eventstore.RecordedEvent{ID: uuid.New(), Stream: "user-x", Metadata: json.RawMessage(`not json`), Data: json.RawMessage(`{}`)}
	for _, typ := range []string{user.TypeCreated, user.TypeUpdated, "email.claimed"} {
		bad.Type = typ
		assert.NoError(t, w.Handle(context.Background(), bad), typ)
	}
	for _, typ := range []string{user.TypeDeactivated, user.TypeDeleted, session.TypeLoggedIn} {
		bad.Type = typ
		assert.Error(t, w.Handle(context.Background(), bad), typ)
	}
}
