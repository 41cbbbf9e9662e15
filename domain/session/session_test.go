package session_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"evident/domain/session"
)

var (
	sid = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-0000000000c1")
	uid = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-000000000001")
	t0  = time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	exp = t0.Add(12 * time.Hour)
)

func hist(events ...session.Event) []session.Event { return events }

var (
	loggedIn = session.LoggedIn{SessionID: sid, UserID: uid, TokenHash: "th", ExpiresAt: exp}
	open     = hist(loggedIn)
	closedBy = map[string][]session.Event{
		"logged out": hist(loggedIn, session.LoggedOut{SessionID: sid, UserID: uid}),
		"revoked":    hist(loggedIn, session.Revoked{SessionID: sid, UserID: uid, Reason: session.ReasonUserDeactivated, RevokedBy: "system"}),
		"expired":    hist(loggedIn, session.Expired{SessionID: sid, UserID: uid, ExpiredAt: exp}),
	}
)

type decideCase struct {
	name  string
	given []session.Event
	when  session.Command
	now   time.Time // zero means t0
	then  []session.Event
	err   error
}

// check is the one helper: fold given, decide when at now, compare with then.
func check(t *testing.T, tc decideCase) {
	t.Helper()
	now := tc.now
	if now.IsZero() {
		now = t0
	}
	var s session.State
	for _, e := range tc.given {
		s = session.Evolve(s, e)
	}
	got, err := session.Decide(s, tc.when, now)
	if tc.err != nil {
		if !errors.Is(err, tc.err) || got != nil {
			t.Fatalf("got %#v, %v; want error %v", got, err, tc.err)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if !reflect.DeepEqual(got, tc.then) {
		t.Fatalf("events\n got: %#v\nwant: %#v", got, tc.then)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	login := session.Login{SessionID: sid, UserID: uid, TokenHash: "th", ExpiresAt: exp}
	revoke := session.Revoke{Reason: session.ReasonRevoked, By: "admin-1"}
	cases := []decideCase{
		{name: "login", when: login, then: hist(loggedIn)},
		{name: "login stores expiry in UTC", when: session.Login{SessionID: sid, UserID: uid, TokenHash: "th", ExpiresAt: exp.In(time.FixedZone("X", -5*3600))},
			then: hist(loggedIn)},
		{name: "login twice", given: open, when: login, err: session.ErrExists},
		{name: "logout", given: open, when: session.Logout{}, then: hist(session.LoggedOut{SessionID: sid, UserID: uid})},
		{name: "revoke", given: open, when: revoke,
			then: hist(session.Revoked{SessionID: sid, UserID: uid, Reason: session.ReasonRevoked, RevokedBy: "admin-1"})},
		{name: "expire exactly at expiry", given: open, when: session.Expire{}, now: exp,
			then: hist(session.Expired{SessionID: sid, UserID: uid, ExpiredAt: exp})},
		{name: "expire after expiry records the expiry time", given: open, when: session.Expire{}, now: exp.Add(time.Hour),
			then: hist(session.Expired{SessionID: sid, UserID: uid, ExpiredAt: exp})},
		{name: "expire one nanosecond before expiry is a no-op", given: open, when: session.Expire{}, now: exp.Add(-time.Nanosecond)},
		{name: "logout, not found", when: session.Logout{}, err: session.ErrNotFound},
		{name: "revoke, not found", when: revoke, err: session.ErrNotFound},
		{name: "expire, not found", when: session.Expire{}, err: session.ErrNotFound},
	}
	for how, given := range closedBy {
		cases = append(cases,
			decideCase{name: "logout when " + how, given: given, when: session.Logout{}},
			decideCase{name: "revoke when " + how, given: given, when: revoke},
			decideCase{name: "expire when " + how, given: given, when: session.Expire{}, now: exp.Add(time.Hour)},
			decideCase{name: "login when " + how, given: given, when: login, err: session.ErrExists},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			check(t, tc)
		})
	}
}

func TestValid(t *testing.T) {
	t.Parallel()
	fold := func(events []session.Event) session.State {
		var s session.State
		for _, e := range events {
			s = session.Evolve(s, e)
		}
		return s
	}
	s := fold(open)
	if !s.Valid(t0) || !s.Valid(exp.Add(-time.Nanosecond)) {
		t.Error("open session is not valid before its expiry")
	}
	if s.Valid(exp) || s.Valid(exp.Add(time.Hour)) {
		t.Error("open session is valid at or after its expiry")
	}
	if (session.State{}).Valid(t0) {
		t.Error("zero state is valid")
	}
	for how, given := range closedBy {
		if fold(given).Valid(t0) {
			t.Errorf("session %s is still valid", how)
		}
	}
	if got := session.Evolve(s, nil); !reflect.DeepEqual(got, s) {
		t.Errorf("Evolve with a nil event changed the state: %#v", got)
	}
	want := session.State{ID: sid, UserID: uid, Exists: true, Open: true, TokenHash: "th", ExpiresAt: exp}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("state\n got: %#v\nwant: %#v", s, want)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	events := []session.Event{
		loggedIn,
		session.LoggedOut{SessionID: sid, UserID: uid},
		session.Expired{SessionID: sid, UserID: uid, ExpiredAt: exp},
		session.Revoked{SessionID: sid, UserID: uid, Reason: session.ReasonUserDeleted, RevokedBy: "system"},
	}
	wantTypes := []string{"auth.user_logged_in", "auth.user_logged_out", "auth.session_expired", "auth.session_revoked"}
	for i, e := range events {
		if e.EventType() != wantTypes[i] {
			t.Errorf("%T.EventType() = %q, want %q (DESIGN §2; never rename)", e, e.EventType(), wantTypes[i])
		}
		if !session.IsType(e.EventType()) {
			t.Errorf("IsType(%q) = false", e.EventType())
		}
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "token\"") {
			t.Errorf("%s carries a raw token: %s", e.EventType(), data)
		}
		for _, schema := range []int{0, session.SchemaVersion} {
			got, err := session.Decode(e.EventType(), schema, data)
			if err != nil {
				t.Fatalf("decode %s: %v", e.EventType(), err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("round trip %s\n got: %#v\nwant: %#v", e.EventType(), got, e)
			}
		}
	}
	for _, typ := range []string{"", "auth", "user.created", "auth.user_logged_in ", "email.claimed"} {
		if session.IsType(typ) {
			t.Errorf("IsType(%q) = true", typ)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, typ string
		schema    int
		data      string
	}{
		{"unknown type", "auth.user_renamed", 1, `{}`},
		{"user type", "user.created", 1, `{}`},
		{"schema too new", session.TypeLoggedIn, session.SchemaVersion + 1, `{}`},
		{"malformed", session.TypeLoggedOut, 1, `{`},
		{"bad time", session.TypeExpired, 1, `{"expired_at":"yesterday"}`},
	}
	for _, tc := range cases {
		if e, err := session.Decode(tc.typ, tc.schema, []byte(tc.data)); err == nil || e != nil {
			t.Errorf("%s: got %#v, %v; want an error", tc.name, e, err)
		}
	}
}
