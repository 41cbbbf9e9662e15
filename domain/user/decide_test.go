package user_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"evident/domain/user"
)

// Fixtures shared by the tables. Times are UTC so that events compare with
// reflect.DeepEqual exactly as Decide builds them.
var (
	id     = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-000000000001")
	credA  = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-0000000000a1")
	credB  = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-0000000000b2")
	t0     = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	exp    = t0.Add(24 * time.Hour)
	before = exp.Add(-time.Nanosecond)
)

const (
	h1 = "hash-1"
	h2 = "hash-2"
)

func ptr[T any](v T) *T { return &v }

func created() user.Event {
	return user.Created{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{user.RoleMember}}
}

func requested(hash string) user.Event {
	return user.ActivationRequested{UserID: id, TokenHash: hash, ExpiresAt: exp, RequestedBy: "admin-1"}
}

func activatedBy(method, hash string) user.Event {
	return user.Activated{UserID: id, ActivatedBy: "admin-1", Method: method, TokenHash: hash}
}

func deactivated() user.Event {
	return user.Deactivated{UserID: id, DeactivatedBy: "admin-1", Reason: "left"}
}

func suspended(from user.Status) user.Event {
	return user.StatusChanged{UserID: id, From: from, To: user.StatusSuspended, Reason: "abuse", ChangedBy: "admin-1"}
}

func tokenExpired(hash string) user.Event {
	return user.ActivationTokenExpired{UserID: id, TokenHash: hash, ExpiredAt: exp}
}

func deleted() user.Event {
	return user.Deleted{UserID: id, DeletedBy: "admin-1", Reason: "gdpr"}
}

// Histories for each status of DESIGN §3.
func hist(events ...user.Event) []user.Event { return events }

var (
	pending   = hist(created())
	active    = hist(created(), activatedBy(user.MethodAdmin, ""))
	inactive  = hist(created(), activatedBy(user.MethodAdmin, ""), deactivated())
	suspend   = hist(created(), activatedBy(user.MethodAdmin, ""), suspended(user.StatusActive))
	gone      = hist(created(), deleted())
	goneToken = hist(created(), requested(h1), deleted())
)

func with(base []user.Event, more ...user.Event) []user.Event {
	return append(append([]user.Event(nil), base...), more...)
}

// decideCase is one given/when/then row.
type decideCase struct {
	name   string
	given  []user.Event
	when   user.Command
	now    time.Time // zero means t0
	then   []user.Event
	err    error       // sentinel expected with errors.Is
	status user.Status // when set, the status after applying then
}

// check is the one helper: fold given, decide when at now, compare with then.
func check(t *testing.T, tc decideCase) {
	t.Helper()
	now := tc.now
	if now.IsZero() {
		now = t0
	}
	s := user.Fold(tc.given)
	got, err := user.Decide(s, tc.when, now)
	if tc.err != nil {
		if !errors.Is(err, tc.err) {
			t.Fatalf("error = %v, want %v", err, tc.err)
		}
		if got != nil {
			t.Fatalf("events = %#v alongside error, want nil", got)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if !reflect.DeepEqual(got, tc.then) {
		t.Fatalf("events\n got: %#v\nwant: %#v", got, tc.then)
	}
	if tc.status != "" {
		if after := user.Fold(with(tc.given, got...)); after.Status != tc.status {
			t.Fatalf("status after = %q, want %q", after.Status, tc.status)
		}
	}
}

func run(t *testing.T, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			check(t, tc)
		})
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	reg := user.Register{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{user.RoleMember}, CredentialID: &credA}
	run(t, []decideCase{
		{name: "new user", when: reg,
			then:   hist(user.Created{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{user.RoleMember}, CredentialID: &credA}),
			status: user.StatusPending},
		{name: "existing user", given: pending, when: reg, err: user.ErrExists},
		{name: "active user", given: active, when: reg, err: user.ErrExists},
		// The stream of a deleted user still exists; its id is never reused.
		{name: "deleted user", given: gone, when: reg, err: user.ErrExists},
	})
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	withCred := hist(user.Created{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{user.RoleMember}, CredentialID: &credA})
	run(t, []decideCase{
		{name: "nothing given is a no-op", given: pending, when: user.Update{By: "u"}},
		{name: "same values are a no-op", given: active,
			when: user.Update{Email: ptr("ann@example.com"), Name: ptr("Ann"), Roles: []string{user.RoleMember}, By: "u"}},
		{name: "same credential is a no-op", given: withCred, when: user.Update{CredentialID: ptr(credA), By: "u"}},
		{name: "name", given: active, when: user.Update{Name: ptr("Ann B"), By: "u"},
			then: hist(user.Updated{UserID: id, Name: ptr("Ann B"), UpdatedBy: "u"}), status: user.StatusActive},
		{name: "email", given: pending, when: user.Update{Email: ptr("ann@example.org"), By: "u"},
			then: hist(user.Updated{UserID: id, Email: ptr("ann@example.org"), UpdatedBy: "u"}), status: user.StatusPending},
		{name: "roles", given: suspend, when: user.Update{Roles: []string{user.RoleAdmin, user.RoleMember}, By: "u"},
			then: hist(user.Updated{UserID: id, Roles: []string{user.RoleAdmin, user.RoleMember}, UpdatedBy: "u"}), status: user.StatusSuspended},
		{name: "only changed fields are carried", given: inactive,
			when: user.Update{Email: ptr("ann@example.com"), Name: ptr("Anna"), Roles: []string{user.RoleMember}, By: "u"},
			then: hist(user.Updated{UserID: id, Name: ptr("Anna"), UpdatedBy: "u"}), status: user.StatusInactive},
		{name: "everything", given: active,
			when: user.Update{Email: ptr("b@example.com"), Name: ptr("B"), Roles: []string{user.RoleAuditor}, CredentialID: ptr(credB), By: "u"},
			then: hist(user.Updated{UserID: id, Email: ptr("b@example.com"), Name: ptr("B"), Roles: []string{user.RoleAuditor}, CredentialID: ptr(credB), UpdatedBy: "u"})},
		{name: "new credential", given: withCred, when: user.Update{CredentialID: ptr(credB), By: "u"},
			then: hist(user.Updated{UserID: id, CredentialID: ptr(credB), UpdatedBy: "u"})},
		{name: "first credential", given: pending, when: user.Update{CredentialID: ptr(credA), By: "u"},
			then: hist(user.Updated{UserID: id, CredentialID: ptr(credA), UpdatedBy: "u"})},
		{name: "after an earlier update", given: with(active, user.Updated{UserID: id, Name: ptr("Anna")}),
			when: user.Update{Name: ptr("Anna"), By: "u"}},
		{name: "not found", when: user.Update{Name: ptr("X")}, err: user.ErrNotFound},
		{name: "deleted", given: gone, when: user.Update{Name: ptr("X")}, err: user.ErrDeleted},
	})
}

func TestRequestActivation(t *testing.T) {
	t.Parallel()
	cmd := user.RequestActivation{TokenHash: h2, ExpiresAt: exp, By: "admin-1"}
	want := hist(user.ActivationRequested{UserID: id, TokenHash: h2, ExpiresAt: exp, RequestedBy: "admin-1"})
	run(t, []decideCase{
		{name: "pending", given: pending, when: cmd, then: want, status: user.StatusPending},
		{name: "pending with an earlier token", given: with(pending, requested(h1)), when: cmd, then: want},
		{name: "inactive", given: inactive, when: cmd, then: want, status: user.StatusInactive},
		{name: "suspended", given: suspend, when: cmd, then: want, status: user.StatusSuspended},
		{name: "expiry is stored in UTC", given: pending,
			when: user.RequestActivation{TokenHash: h2, ExpiresAt: exp.In(time.FixedZone("CET", 3600)), By: "admin-1"},
			then: want},
		{name: "active", given: active, when: cmd, err: user.ErrAlreadyActive},
		{name: "deleted", given: gone, when: cmd, err: user.ErrDeleted},
		{name: "not found", when: cmd, err: user.ErrNotFound},
	})
}

func TestActivateWithToken(t *testing.T) {
	t.Parallel()
	act := func(hash string) user.Command {
		return user.Activate{Method: user.MethodToken, TokenHash: hash, By: "anonymous"}
	}
	ok := func(hash string) []user.Event {
		return hist(user.Activated{UserID: id, ActivatedBy: "anonymous", Method: user.MethodToken, TokenHash: hash})
	}
	run(t, []decideCase{
		{name: "valid from pending", given: with(pending, requested(h1)), when: act(h1), then: ok(h1), status: user.StatusActive},
		{name: "valid from inactive", given: with(inactive, requested(h1)), when: act(h1), then: ok(h1), status: user.StatusActive},
		{name: "valid from suspended", given: with(suspend, requested(h1)), when: act(h1), then: ok(h1), status: user.StatusActive},
		{name: "valid with a password", given: with(pending, requested(h1)),
			when: user.Activate{Method: user.MethodToken, TokenHash: h1, CredentialID: &credA, By: "anonymous"},
			then: hist(user.Activated{UserID: id, ActivatedBy: "anonymous", Method: user.MethodToken, TokenHash: h1, CredentialID: &credA})},
		{name: "one nanosecond before expiry", given: with(pending, requested(h1)), when: act(h1), now: before, then: ok(h1)},
		{name: "newest token after a supersede", given: with(pending, requested(h1), requested(h2)), when: act(h2), then: ok(h2)},

		{name: "unknown", given: with(pending, requested(h1)), when: act("nope"), err: user.ErrInvalidToken},
		{name: "no token requested", given: pending, when: act(h1), err: user.ErrInvalidToken},
		{name: "superseded", given: with(pending, requested(h1), requested(h2)), when: act(h1), err: user.ErrInvalidToken},
		{name: "used", given: with(pending, requested(h1), activatedBy(user.MethodToken, h1)), when: act(h1), err: user.ErrTokenUsed},
		{name: "used, then user deactivated", given: with(pending, requested(h1), activatedBy(user.MethodToken, h1), deactivated()),
			when: act(h1), err: user.ErrTokenUsed},
		{name: "exactly at expiry", given: with(pending, requested(h1)), when: act(h1), now: exp, err: user.ErrTokenExpired},
		{name: "after expiry", given: with(pending, requested(h1)), when: act(h1), now: exp.Add(time.Hour), err: user.ErrTokenExpired},
		{name: "expired by event, clock before expiry", given: with(pending, requested(h1), tokenExpired(h1)),
			when: act(h1), now: t0, err: user.ErrTokenExpired},
		{name: "killed by deactivate", given: with(pending, requested(h1), deactivated()), when: act(h1), err: user.ErrInvalidToken},
		{name: "killed by suspend", given: with(inactive, requested(h1), suspended(user.StatusInactive)), when: act(h1), err: user.ErrInvalidToken},
		{name: "killed by admin activation", given: with(pending, requested(h1), activatedBy(user.MethodAdmin, "")),
			when: act(h1), err: user.ErrInvalidToken},
		{name: "killed by auto activation", given: with(pending, requested(h1), activatedBy(user.MethodAuto, "")),
			when: act(h1), err: user.ErrInvalidToken},
		// A deleted user answers every command with ErrDeleted, a token too;
		// TestDeleteRevokesTokens shows the token itself is dead.
		{name: "deleted", given: goneToken, when: act(h1), err: user.ErrDeleted},
		{name: "not found", when: act(h1), err: user.ErrNotFound},
	})
}

func TestDeleteRevokesTokens(t *testing.T) {
	t.Parallel()
	s := user.Fold(goneToken)
	if got := s.Tokens[h1].Status; got != user.TokenRevoked {
		t.Fatalf("token status after delete = %q, want %q", got, user.TokenRevoked)
	}
	if p := s.PendingTokens(); len(p) != 0 {
		t.Fatalf("pending tokens after delete = %v, want none", p)
	}
}

func TestActivateByAdminOrAuto(t *testing.T) {
	t.Parallel()
	admin := user.Activate{Method: user.MethodAdmin, By: "admin-1"}
	auto := user.Activate{Method: user.MethodAuto, By: "system"}
	wantAdmin := hist(user.Activated{UserID: id, ActivatedBy: "admin-1", Method: user.MethodAdmin})
	run(t, []decideCase{
		{name: "admin from pending", given: pending, when: admin, then: wantAdmin, status: user.StatusActive},
		{name: "admin from inactive", given: inactive, when: admin, then: wantAdmin, status: user.StatusActive},
		{name: "admin from suspended", given: suspend, when: admin, then: wantAdmin, status: user.StatusActive},
		{name: "admin with a pending token", given: with(pending, requested(h1)), when: admin, then: wantAdmin},
		{name: "auto from pending", given: pending, when: auto,
			then: hist(user.Activated{UserID: id, ActivatedBy: "system", Method: user.MethodAuto}), status: user.StatusActive},
		{name: "admin when active is a no-op", given: active, when: admin},
		{name: "auto when active is a no-op", given: active, when: auto},
		{name: "deleted", given: gone, when: admin, err: user.ErrDeleted},
		{name: "not found", when: auto, err: user.ErrNotFound},
	})
}

func TestActivateUnknownMethod(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"", "magic", "Admin"} {
		got, err := user.Decide(user.Fold(pending), user.Activate{Method: m, By: "x"}, t0)
		var ve *user.ValidationError
		if !errors.As(err, &ve) || ve.Field != "method" || got != nil {
			t.Errorf("method %q: events %v, error %v; want a method ValidationError", m, got, err)
		}
	}
}

func TestDeactivate(t *testing.T) {
	t.Parallel()
	cmd := user.Deactivate{By: "admin-1", Reason: "left"}
	want := hist(user.Deactivated{UserID: id, DeactivatedBy: "admin-1", Reason: "left"})
	run(t, []decideCase{
		{name: "active", given: active, when: cmd, then: want, status: user.StatusInactive},
		{name: "suspended", given: suspend, when: cmd, then: want, status: user.StatusInactive},
		{name: "pending", given: pending, when: cmd, then: want, status: user.StatusInactive},
		{name: "inactive is a no-op", given: inactive, when: cmd},
		{name: "deleted", given: gone, when: cmd, err: user.ErrDeleted},
		{name: "not found", when: cmd, err: user.ErrNotFound},
	})
}

func TestSuspend(t *testing.T) {
	t.Parallel()
	cmd := user.Suspend{By: "admin-1", Reason: "abuse"}
	from := func(s user.Status) []user.Event {
		return hist(user.StatusChanged{UserID: id, From: s, To: user.StatusSuspended, Reason: "abuse", ChangedBy: "admin-1"})
	}
	run(t, []decideCase{
		{name: "active", given: active, when: cmd, then: from(user.StatusActive), status: user.StatusSuspended},
		{name: "pending", given: pending, when: cmd, then: from(user.StatusPending), status: user.StatusSuspended},
		{name: "inactive", given: inactive, when: cmd, then: from(user.StatusInactive), status: user.StatusSuspended},
		{name: "reactivated after a suspension", given: with(suspend, activatedBy(user.MethodAdmin, "")),
			when: cmd, then: from(user.StatusActive), status: user.StatusSuspended},
		{name: "suspended is a no-op", given: suspend, when: cmd},
		{name: "deleted", given: gone, when: cmd, err: user.ErrDeleted},
		{name: "not found", when: cmd, err: user.ErrNotFound},
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	cmd := user.Delete{By: "admin-1", Reason: "gdpr"}
	want := hist(user.Deleted{UserID: id, DeletedBy: "admin-1", Reason: "gdpr"})
	run(t, []decideCase{
		{name: "pending", given: pending, when: cmd, then: want, status: user.StatusDeleted},
		{name: "active", given: active, when: cmd, then: want, status: user.StatusDeleted},
		{name: "inactive", given: inactive, when: cmd, then: want, status: user.StatusDeleted},
		{name: "suspended", given: suspend, when: cmd, then: want, status: user.StatusDeleted},
		{name: "deleted", given: gone, when: cmd, err: user.ErrDeleted},
		{name: "not found", when: cmd, err: user.ErrNotFound},
	})
}

func TestEveryCommandOnDeletedUser(t *testing.T) {
	t.Parallel()
	cmds := map[string]user.Command{
		"update":             user.Update{Name: ptr("X")},
		"update no-op":       user.Update{},
		"request activation": user.RequestActivation{TokenHash: h2, ExpiresAt: exp},
		"activate token":     user.Activate{Method: user.MethodToken, TokenHash: h1},
		"activate admin":     user.Activate{Method: user.MethodAdmin},
		"activate auto":      user.Activate{Method: user.MethodAuto},
		"deactivate":         user.Deactivate{},
		"suspend":            user.Suspend{},
		"delete":             user.Delete{},
		"expire token":       user.ExpireToken{TokenHash: h1},
	}
	var cases []decideCase
	for name, c := range cmds {
		cases = append(cases,
			decideCase{name: name, given: goneToken, when: c, err: user.ErrDeleted},
			decideCase{name: name + " after expiry", given: goneToken, when: c, now: exp.Add(time.Hour), err: user.ErrDeleted},
			decideCase{name: name + " deleted while suspended", given: with(suspend, deleted()), when: c, err: user.ErrDeleted},
		)
	}
	run(t, cases)
}

func TestExpireToken(t *testing.T) {
	t.Parallel()
	cmd := user.ExpireToken{TokenHash: h1}
	want := hist(user.ActivationTokenExpired{UserID: id, TokenHash: h1, ExpiredAt: exp})
	run(t, []decideCase{
		{name: "pending, exactly at expiry", given: with(pending, requested(h1)), when: cmd, now: exp, then: want, status: user.StatusPending},
		{name: "pending, after expiry records the expiry time", given: with(pending, requested(h1)), when: cmd, now: exp.Add(time.Hour), then: want},
		{name: "inactive user's token", given: with(inactive, requested(h1)), when: cmd, now: exp, then: want, status: user.StatusInactive},
		{name: "one nanosecond before expiry is a no-op", given: with(pending, requested(h1)), when: cmd, now: before},
		{name: "never twice", given: with(pending, requested(h1), tokenExpired(h1)), when: cmd, now: exp.Add(time.Hour)},
		{name: "unknown token", given: with(pending, requested(h1)), when: user.ExpireToken{TokenHash: "nope"}, now: exp},
		{name: "used token", given: with(pending, requested(h1), activatedBy(user.MethodToken, h1)), when: cmd, now: exp},
		{name: "superseded token", given: with(pending, requested(h1), requested(h2)), when: cmd, now: exp},
		{name: "revoked token", given: with(pending, requested(h1), deactivated()), when: cmd, now: exp},
		{name: "only the named token", given: with(pending, requested(h1)), when: user.ExpireToken{TokenHash: h2}, now: exp},
		{name: "deleted", given: goneToken, when: cmd, now: exp, err: user.ErrDeleted},
		{name: "not found", when: cmd, now: exp, err: user.ErrNotFound},
	})
}

func TestEvolve(t *testing.T) {
	t.Parallel()

	t.Run("unknown or nil event leaves state as is", func(t *testing.T) {
		s := user.Fold(with(pending, requested(h1)))
		if got := user.Evolve(s, nil); !reflect.DeepEqual(got, s) {
			t.Fatalf("Evolve(s, nil) = %#v, want %#v", got, s)
		}
	})

	t.Run("earlier states are values", func(t *testing.T) {
		// Evolve must copy the token map so a kept state never changes under it.
		s := user.Fold(with(pending, requested(h1)))
		for _, e := range []user.Event{requested(h2), activatedBy(user.MethodToken, h1), deactivated(),
			suspended(user.StatusPending), tokenExpired(h1), deleted(), user.Updated{UserID: id, Roles: []string{"admin"}}} {
			_ = user.Evolve(s, e)
			if got := s.Tokens[h1].Status; got != user.TokenPending {
				t.Fatalf("%T changed an earlier state's token to %q", e, got)
			}
			if len(s.Tokens) != 1 || s.Status != user.StatusPending || !reflect.DeepEqual(s.Roles, []string{user.RoleMember}) {
				t.Fatalf("%T changed an earlier state: %#v", e, s)
			}
		}
	})

	t.Run("folded state", func(t *testing.T) {
		s := user.Fold(with(pending, user.Updated{UserID: id, Email: ptr("b@example.com"), Roles: []string{user.RoleAdmin}},
			requested(h1), requested(h2), activatedBy(user.MethodToken, h2)))
		want := user.State{
			ID: id, Exists: true, Email: "b@example.com", Name: "Ann", Roles: []string{user.RoleAdmin},
			Status: user.StatusActive,
			Tokens: map[string]user.Token{
				h1: {Hash: h1, ExpiresAt: exp, Status: user.TokenSuperseded},
				h2: {Hash: h2, ExpiresAt: exp, Status: user.TokenUsed},
			},
		}
		if !reflect.DeepEqual(s, want) {
			t.Fatalf("state\n got: %#v\nwant: %#v", s, want)
		}
		if !s.HasRole(user.RoleAdmin) || s.HasRole(user.RoleMember) {
			t.Fatalf("HasRole wrong for roles %v", s.Roles)
		}
	})
}
