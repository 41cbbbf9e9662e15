package tests

// Black-box tests for cases C10–C21 of CASES.md (sessions and lifecycle,
// one-time tokens, identity, time and the audit trail, the embedded store
// under load), against the real binary on the embedded SQLite store.

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---------------------------------------------------------------------------
// Sessions and lifecycle

// C10: deactivation, suspension and deletion end every session of the user
// before the command answers.
func TestC10_DeactivationEndsSessionsAtOnce(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	cases := []struct {
		name, method, suffix string
		reason               string // the revocation reason the audit must show
	}{
		{"deactivate", http.MethodPost, "/deactivate", "user_deactivated"},
		{"suspend", http.MethodPost, "/suspend", "user_suspended"},
		{"delete", http.MethodDelete, "", "user_deleted"},
	}
	// Each variant runs a few times at once: the cleanup workflow races the
	// command for the same revocations, and the answer must not depend on who
	// wins.
	const rounds = 4
	for _, tc := range cases {
		for round := 1; round <= rounds; round++ {
			t.Run(fmt.Sprintf("%s/%d", tc.name, round), func(t *testing.T) {
				t.Parallel()
				c1xEndsSessions(t, s, tc.method, tc.suffix, tc.name, tc.reason)
			})
		}
	}
}

func c1xEndsSessions(t *testing.T, s *Server, method, suffix, name, reason string) {
	id, email := s.NewActiveUser(t, "C10 "+name)
	tok1, sid1 := s.Login(t, email, userPassword)
	tok2, sid2 := s.Login(t, email, userPassword)
	for _, tok := range []string{tok1, tok2} {
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, tok, nil)
		require.Equal(t, http.StatusOK, r.Status, "session works before %s: %s", name, r)
	}

	r := s.Do(t, method, "/v1/users/"+id+suffix, s.AdminToken, map[string]any{"reason": "c10"})
	require.Equal(t, http.StatusOK, r.Status, "%s: %s", name, r)

	// Right after the answer: no retries, no waiting. The read side first.
	open := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions?status=open", s.AdminToken, nil))
	revoked := s.Audit(t, "action=session_revoked&user_id="+id)
	all := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions", s.AdminToken, nil))

	assert.Empty(t, open, "open sessions right after %s", name)
	assert.ElementsMatch(t, []string{sid1, sid2}, c1xField(all, "id"), "sessions of the user")
	for _, it := range all {
		assert.Equal(t, "revoked", it["status"], "session %v right after %s", it["id"], name)
		assert.Equal(t, reason, it["end_reason"], "session %v right after %s", it["id"], name)
	}
	if !assert.ElementsMatch(t, []string{sid1, sid2}, c1xField(revoked, "aggregate_id"),
		"one session_revoked per session right after %s: %v", name, revoked) {
		// Say who wrote the revocations the answer did not wait for.
		require.Eventually(t, func() bool {
			rows, err := c1xTryItems(s, s.AdminToken, "/v1/audit?action=session_revoked&user_id="+id)
			revoked = rows
			return err == nil && len(rows) >= 2
		}, 10*time.Second, 50*time.Millisecond, "sessions never revoked")
		for _, row := range revoked {
			t.Logf("session %v revoked later at position %v by actor %v (answer was at position %v)",
				row["aggregate_id"], row["position"], row["actor_id"], r.JSON(t)["position"])
		}
	}
	for _, row := range revoked {
		assert.Equal(t, reason, c1xDetails(t, row)["reason"], "revocation reason")
	}

	for i, tok := range []string{tok1, tok2} {
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, tok, nil)
		assert.Equal(t, http.StatusUnauthorized, r.Status, "session %d read after %s: %s", i+1, name, r)
		r = s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions", tok, nil)
		assert.Equal(t, http.StatusUnauthorized, r.Status, "session %d lists sessions after %s: %s", i+1, name, r)
		r = s.Do(t, http.MethodPatch, "/v1/users/"+id, tok, map[string]any{"name": "C10 after " + name})
		assert.Equal(t, http.StatusUnauthorized, r.Status, "session %d writes after %s: %s", i+1, name, r)
		r = s.Do(t, http.MethodDelete, "/v1/sessions/current", tok, nil)
		assert.Equal(t, http.StatusUnauthorized, r.Status, "session %d logs out after %s: %s", i+1, name, r)
	}
	r2 := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
	assert.Equal(t, http.StatusUnauthorized, r2.Status, "new login after %s: %s", name, r2)
	// The refused writes changed nothing.
	assert.Empty(t, s.Audit(t, "action=user_updated&user_id="+id), "a refused session changed the user")
	assert.Empty(t, s.Audit(t, "action=user_logged_out&user_id="+id), "a refused session logged out")
}

// C11: while suspended, login, an old activation token and every
// authenticated call are refused and change nothing; an admin's reactivation
// does not bring old sessions back.
func TestC11_SuspensionClosesEveryPath(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "C11 member")
	tok1, sid1 := s.Login(t, email, userPassword)
	tok2, _ := s.Login(t, email, userPassword)
	// A second user holds an activation token issued before its suspension.
	pendingID := s.RegisterUser(t, uniqueEmail(t), "C11 pending")
	oldToken := s.RequestActivation(t, pendingID)

	for _, uid := range []string{id, pendingID} {
		r := s.Do(t, http.MethodPost, "/v1/users/"+uid+"/suspend", s.AdminToken, map[string]any{"reason": "c11"})
		require.Equal(t, http.StatusOK, r.Status, "suspend %s: %s", uid, r)
		require.Equal(t, "suspended", r.JSON(t)["status"], "suspend %s: %s", uid, r)
	}
	// C10 checks that the answer already shows the revocations; here the
	// snapshot must simply be complete.
	c1xWaitAudited(t, s, "action=session_revoked&user_id="+id, 2)
	before := s.Audit(t, "")
	userBefore := c1xGetUser(t, s, id)
	pendingBefore := c1xGetUser(t, s, pendingID)

	r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
	c1xAssertProblem(t, r, http.StatusUnauthorized, "user_not_active", "login while suspended")

	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": oldToken, "password": "c11-new-password"})
	c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_token", "old token with a password while suspended")
	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": oldToken})
	c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_token", "old token while suspended")

	calls := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/v1/users/" + id, nil},
		{http.MethodGet, "/v1/users/" + id + "/sessions", nil},
		{http.MethodPatch, "/v1/users/" + id, map[string]any{"name": "C11 changed"}},
		{http.MethodPatch, "/v1/users/" + id, map[string]any{"password": "c11-other-password"}},
		{http.MethodDelete, "/v1/sessions/" + sid1, nil},
		{http.MethodDelete, "/v1/sessions/current", nil},
		{http.MethodPost, "/v1/activations", map[string]any{"token": oldToken}},
		{http.MethodPost, "/v1/users", map[string]any{"email": uniqueEmail(t), "name": "C11 made by a suspended user"}},
	}
	for i, tok := range []string{tok1, tok2} {
		for _, c := range calls {
			r := s.Do(t, c.method, c.path, tok, c.body)
			assert.Equal(t, http.StatusUnauthorized, r.Status, "session %d: %s %s while suspended: %s", i+1, c.method, c.path, r)
		}
	}

	assert.Equal(t, before, c1xAuditAfterSentinel(t, s), "refused requests changed the audit trail")
	assert.Equal(t, userBefore, c1xGetUser(t, s, id), "refused requests changed the suspended user")
	assert.Equal(t, pendingBefore, c1xGetUser(t, s, pendingID), "refused requests changed the pending user")

	// An admin reactivates: the old sessions stay dead, the old password works.
	r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/activate", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "reactivate: %s", r)
	require.Equal(t, "active", r.JSON(t)["status"], "reactivate: %s", r)
	for i, tok := range []string{tok1, tok2} {
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, tok, nil)
		assert.Equal(t, http.StatusUnauthorized, r.Status, "old session %d after reactivation: %s", i+1, r)
	}
	open := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions?status=open", s.AdminToken, nil))
	assert.Empty(t, open, "open sessions after reactivation")
	tok3, _ := s.Login(t, email, userPassword)
	r = s.Do(t, http.MethodGet, "/v1/users/"+id, tok3, nil)
	require.Equal(t, http.StatusOK, r.Status, "new session: %s", r)
	assert.Equal(t, "C11 member", r.JSON(t)["name"], "a refused PATCH was applied")

	// The pending user reactivated by an admin: its old token stays refused.
	r = s.Do(t, http.MethodPost, "/v1/users/"+pendingID+"/activate", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "reactivate pending user: %s", r)
	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": oldToken})
	c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_token", "old token after reactivation")
	assert.Empty(t, s.Audit(t, "action=user_logged_in&user_id="+pendingID))
}

// C12: with a short session duration and a restart in between, an expired
// session is not open, its token is refused, and exactly one
// auth.session_expired is recorded, carrying the real expiry.
func TestC12_ExpiredSessionsAcrossRestart(t *testing.T) {
	t.Parallel()
	const duration = 3 * time.Second
	s := startServer(t, WithEnv("EVIDENT_SESSION_DURATION=3s"))
	// Every session lives 3 s, the admin's too: log the admin in afresh
	// before each use.
	c1xRefreshAdmin(t, s)
	id, email := s.NewActiveUser(t, "C12 member")
	tok1, sid1, exp1 := c1xLogin(t, s, email, userPassword)
	assert.WithinDuration(t, time.Now().Add(duration), exp1, time.Second, "expires_at of a 3s session")
	r := s.Do(t, http.MethodGet, "/v1/users/"+id, tok1, nil)
	require.Equal(t, http.StatusOK, r.Status, "fresh session: %s", r)

	// The session expires while the server is down.
	s.Stop()
	time.Sleep(time.Until(exp1) + time.Second)
	s.Restart(t)

	r = s.Do(t, http.MethodGet, "/v1/users/"+id, tok1, nil)
	assert.Equal(t, http.StatusUnauthorized, r.Status, "expired token after restart: %s", r)
	c1xRefreshAdmin(t, s)
	open := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions?status=open", s.AdminToken, nil))
	assert.Empty(t, open, "open sessions after expiry and restart")
	all := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions", s.AdminToken, nil))
	require.Len(t, all, 1, "sessions of the user")
	assert.Equal(t, "expired", all[0]["status"], "session after expiry: %v", all[0])

	row := c1xWaitExpired(t, s, id, sid1)
	assert.WithinDuration(t, exp1, c1xTime(t, c1xDetails(t, row)["expired_at"]), time.Millisecond, "details.expired_at is the session's expiry")
	assert.False(t, c1xTime(t, row["occurred_at"]).Before(exp1), "expiry recorded before the session expired: %v", row)

	// A second session expires while the server runs: recorded promptly.
	tok2, sid2, exp2 := c1xLogin(t, s, email, userPassword)
	row2 := c1xWaitExpired(t, s, id, sid2)
	at2 := c1xTime(t, row2["occurred_at"])
	assert.WithinDuration(t, exp2, c1xTime(t, c1xDetails(t, row2)["expired_at"]), time.Millisecond, "details.expired_at is the session's expiry")
	assert.False(t, at2.Before(exp2), "expiry recorded before the session expired: %v", row2)
	assert.WithinDuration(t, exp2, at2, 3*time.Second, "expiry recorded long after the session expired: %v", row2)
	r = s.Do(t, http.MethodGet, "/v1/users/"+id, tok2, nil)
	assert.Equal(t, http.StatusUnauthorized, r.Status, "expired token: %s", r)

	// Many scheduler passes later, still exactly one record per session.
	c1xRefreshAdmin(t, s)
	expired := s.Audit(t, "action=session_expired&user_id="+id)
	assert.ElementsMatch(t, []string{sid1, sid2}, c1xField(expired, "aggregate_id"), "session_expired rows: %v", expired)
	assert.Empty(t, s.Audit(t, "action=session_revoked&user_id="+id), "an expired session was revoked")
}

// ---------------------------------------------------------------------------
// One-time tokens

// C13: a used activation token is refused with 409 token_used, appends no
// second user_activated and opens no session.
func TestC13_ActivationTokenSingleUse(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	email := uniqueEmail(t)
	id := s.RegisterUser(t, email, "C13")
	tok := s.RequestActivation(t, id)

	r := s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": userPassword})
	require.Equal(t, http.StatusOK, r.Status, "first redemption: %s", r)
	require.Equal(t, "active", r.JSON(t)["status"])

	for _, body := range []map[string]any{
		{"token": tok},
		{"token": tok, "password": "c13-second-password"},
	} {
		r := s.Do(t, http.MethodPost, "/v1/activations", "", body)
		c1xAssertProblem(t, r, http.StatusConflict, "token_used", "second redemption")
		m := r.JSON(t)
		assert.NotContains(t, m, "token", "a refused redemption handed out a token")
		assert.NotContains(t, m, "session_id", "a refused redemption opened a session")
	}

	assert.Len(t, s.Audit(t, "action=user_activated&user_id="+id), 1, "user_activated rows")
	assert.Empty(t, s.Audit(t, "action=user_logged_in&user_id="+id), "a redemption opened a session")
	assert.Empty(t, c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions", s.AdminToken, nil)), "sessions")
	// The second redemption's password was not set.
	r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": "c13-second-password"})
	assert.Equal(t, http.StatusUnauthorized, r.Status, "password of a refused redemption: %s", r)
	s.Login(t, email, userPassword)
}

// C14: 20 parallel redemptions of one token: one 200, the rest 409/410,
// never a 5xx, exactly one user_activated.
func TestC14_RacingRedemptions(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	email := uniqueEmail(t)
	id := s.RegisterUser(t, email, "C14")
	tok := s.RequestActivation(t, id)

	const n = 20
	password := func(i int) string { return fmt.Sprintf("c14-password-%02d", i) }
	results := make([]*Response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := map[string]any{"token": tok}
			if i%2 == 0 {
				body["password"] = password(i)
			}
			<-start
			results[i], errs[i] = s.Try(http.MethodPost, "/v1/activations", "", body)
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, r := range results {
		require.NoError(t, errs[i], "redemption %d", i)
		assert.Less(t, r.Status, 500, "redemption %d: %s", i, r)
		switch r.Status {
		case http.StatusOK:
			assert.Equal(t, -1, winner, "a second redemption succeeded: %d and %d", winner, i)
			winner = i
		case http.StatusConflict, http.StatusGone:
		default:
			assert.Fail(t, "unexpected status", "redemption %d: %s", i, r)
		}
	}
	require.NotEqual(t, -1, winner, "no redemption succeeded")
	assert.Len(t, s.Audit(t, "action=user_activated&user_id="+id), 1, "user_activated rows")

	// Only the winner's password, if it sent one, was set.
	for i := 0; i < n; i += 2 {
		want := http.StatusUnauthorized
		if i == winner {
			want = http.StatusCreated
		}
		r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": password(i)})
		assert.Equal(t, want, r.Status, "login with the password of redemption %d (winner %d): %s", i, winner, r)
	}
}

// C15: a token requested before the user is deactivated, suspended, deleted
// or activated by an admin is refused afterwards.
func TestC15_StateChangesKillPendingTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	cases := []struct {
		name, method, suffix string
		status               int
		code                 string
		userStatus           string
	}{
		{"deactivate", http.MethodPost, "/deactivate", http.StatusBadRequest, "invalid_token", "inactive"},
		{"suspend", http.MethodPost, "/suspend", http.StatusBadRequest, "invalid_token", "suspended"},
		{"delete", http.MethodDelete, "", http.StatusConflict, "user_deleted", "deleted"},
		{"admin activate", http.MethodPost, "/activate", http.StatusBadRequest, "invalid_token", "active"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			email := uniqueEmail(t)
			id := s.RegisterUser(t, email, "C15 "+tc.name)
			tok := s.RequestActivation(t, id)
			r := s.Do(t, tc.method, "/v1/users/"+id+tc.suffix, s.AdminToken, nil)
			require.Equal(t, http.StatusOK, r.Status, "%s: %s", tc.name, r)

			r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": "c15-token-password"})
			c1xAssertProblem(t, r, tc.status, tc.code, "token after "+tc.name)
			r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok})
			c1xAssertProblem(t, r, tc.status, tc.code, "token without password after "+tc.name)

			assert.Equal(t, tc.userStatus, c1xGetUser(t, s, id)["status"], "user after a refused token")
			for _, row := range s.Audit(t, "action=user_activated&user_id="+id) {
				assert.NotEqual(t, "token", c1xDetails(t, row)["method"], "activated by a dead token: %v", row)
			}
			toks := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/activation-tokens", s.AdminToken, nil))
			require.Len(t, toks, 1, "activation tokens")
			assert.Equal(t, "revoked", toks[0]["status"], "token after %s: %v", tc.name, toks[0])
			r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": "c15-token-password"})
			assert.Equal(t, http.StatusUnauthorized, r.Status, "the refused token set a password: %s", r)

			if tc.userStatus == "active" {
				// Deactivated later, the user still cannot come back with the dead token.
				r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, nil)
				require.Equal(t, http.StatusOK, r.Status, "deactivate: %s", r)
				r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok})
				c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_token", "dead token after a later deactivation")
				assert.Equal(t, "inactive", c1xGetUser(t, s, id)["status"])
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Identity

// C16: addresses that differ in case and surrounding spaces are one user.
func TestC16_EmailCaseAndSpaces(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	local := strings.TrimSuffix(uniqueEmail(t), "@example.test")
	mixed := "Ann-" + local + "@Example.org"
	lower := strings.ToLower(mixed)

	r := s.Do(t, http.MethodPost, "/v1/users", "", map[string]any{"email": mixed, "name": "Ann", "password": userPassword})
	require.Equal(t, http.StatusCreated, r.Status, "register %q: %s", mixed, r)
	m := r.JSON(t)
	id, _ := m["id"].(string)
	require.NotEmpty(t, id)
	assert.Equal(t, lower, m["email"], "stored address")

	for _, again := range []string{" " + lower + " ", strings.ToUpper(lower), "\t" + mixed + "\n"} {
		r := s.Do(t, http.MethodPost, "/v1/users", "", map[string]any{"email": again, "name": "Ann again", "password": userPassword})
		c1xAssertProblem(t, r, http.StatusConflict, "email_taken", fmt.Sprintf("register %q", again))
	}

	r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/activate", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "activate: %s", r)
	for _, variant := range []string{mixed, lower, strings.ToUpper(lower), " " + lower + " ", "\t" + mixed + "\n"} {
		r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": variant, "password": userPassword})
		require.Equal(t, http.StatusCreated, r.Status, "login as %q: %s", variant, r)
		assert.Equal(t, id, r.JSON(t)["user_id"], "login as %q", variant)
	}

	created := 0
	for _, row := range s.Audit(t, "action=user_created") {
		if e, _ := c1xDetails(t, row)["email"].(string); strings.EqualFold(strings.TrimSpace(e), lower) {
			created++
			assert.Equal(t, lower, e, "address in the audit")
			assert.Equal(t, id, row["aggregate_id"])
		}
	}
	assert.Equal(t, 1, created, "user_created rows for %s", lower)
	users := s.Users(t, "email="+url.QueryEscape(strings.ToUpper(lower)))
	assert.Equal(t, []string{id}, c1xField(users, "id"), "users listed for the upper-case address")
}

// C17: 20 parallel registrations of one address: one 201, the rest 409
// email_taken, never a 5xx; later retries still 409.
func TestC17_RacingSignUps(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	addr := uniqueEmail(t)
	variant := func(i int) string {
		switch i % 3 {
		case 1:
			return strings.ToUpper(addr)
		case 2:
			return "  " + addr + " "
		}
		return addr
	}

	const n = 20
	results := make([]*Response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := map[string]any{"email": variant(i), "name": fmt.Sprintf("C17 racer %d", i), "password": userPassword}
			<-start
			results[i], errs[i] = s.Try(http.MethodPost, "/v1/users", "", body)
		})
	}
	close(start)
	wg.Wait()

	winner := ""
	created := 0
	for i, r := range results {
		require.NoError(t, errs[i], "registration %d", i)
		switch r.Status {
		case http.StatusCreated:
			created++
			winner, _ = r.JSON(t)["id"].(string)
		default:
			c1xAssertProblem(t, r, http.StatusConflict, "email_taken", fmt.Sprintf("registration %d", i))
		}
	}
	require.Equal(t, 1, created, "registrations that got 201")

	for i := range 3 {
		r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": variant(i), "name": "C17 late"})
		c1xAssertProblem(t, r, http.StatusConflict, "email_taken", fmt.Sprintf("late retry %d", i))
	}

	var rows []map[string]any
	for _, row := range s.Audit(t, "action=user_created") {
		if c1xDetails(t, row)["email"] == addr {
			rows = append(rows, row)
		}
	}
	assert.Equal(t, []string{winner}, c1xField(rows, "aggregate_id"), "user_created rows for %s", addr)
	assert.Equal(t, []string{winner}, c1xField(s.Users(t, "email="+url.QueryEscape(addr)), "id"), "users with %s", addr)
}

// ---------------------------------------------------------------------------
// Time and the audit trail

// c1xRFC3339Offset is an RFC 3339 timestamp with an explicit offset (Z counts).
var c1xRFC3339Offset = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`)

// C18: under a non-UTC TZ, a token works 5 s before its expiry and fails 5 s
// after; expires_at carries an offset and the audit shows the same instant.
func TestC18_TimeZones(t *testing.T) {
	t.Parallel()
	const ttl = 8 * time.Second
	s := startServer(t, WithEnv("TZ=Pacific/Auckland", "EVIDENT_ACTIVATION_TOKEN_DURATION=8s"))

	issue := func(name string) (id, token string, expires time.Time) {
		id = s.RegisterUser(t, uniqueEmail(t), "C18 "+name)
		r := s.Do(t, http.MethodPost, "/v1/users/"+id+"/activation-requests", s.AdminToken, nil)
		require.Equal(t, http.StatusCreated, r.Status, "activation request: %s", r)
		m := r.JSON(t)
		token, _ = m["token"].(string)
		raw, _ := m["expires_at"].(string)
		require.Regexp(t, c1xRFC3339Offset, raw, "expires_at of %s", name)
		expires = c1xTime(t, raw)
		assert.WithinDuration(t, time.Now().Add(ttl), expires, 2*time.Second, "expires_at of %s is not 8s from now: %s", name, raw)
		return id, token, expires
	}
	earlyID, earlyTok, earlyExp := issue("early")
	lateID, lateTok, lateExp := issue("late")

	time.Sleep(time.Until(earlyExp.Add(-5 * time.Second)))
	r := s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": earlyTok})
	assert.Equal(t, http.StatusOK, r.Status, "token ~5s before its expiry: %s", r)
	require.True(t, time.Now().Before(earlyExp), "the test was too slow to redeem before expiry")

	time.Sleep(time.Until(lateExp.Add(5 * time.Second)))
	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": lateTok})
	c1xAssertProblem(t, r, http.StatusGone, "token_expired", "token ~5s after its expiry")

	for _, u := range []struct {
		id  string
		exp time.Time
	}{{earlyID, earlyExp}, {lateID, lateExp}} {
		rows := s.Audit(t, "action=user_activation_requested&user_id="+u.id)
		require.Len(t, rows, 1, "user_activation_requested rows")
		raw, _ := c1xDetails(t, rows[0])["expires_at"].(string)
		assert.Regexp(t, c1xRFC3339Offset, raw, "details.expires_at in the audit")
		assert.True(t, c1xTime(t, raw).Equal(u.exp), "audit expires_at %s, answer said %s", raw, u.exp.Format(time.RFC3339Nano))
		assert.Regexp(t, c1xRFC3339Offset, rows[0]["occurred_at"], "occurred_at in the audit")
		toks := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+u.id+"/activation-tokens", s.AdminToken, nil))
		require.Len(t, toks, 1)
		assert.True(t, c1xTime(t, toks[0]["expires_at"]).Equal(u.exp), "token list expires_at %v, answer said %s", toks[0]["expires_at"], u.exp)
	}
	var expired []map[string]any
	require.Eventually(t, func() bool {
		expired, _ = c1xTryItems(s, s.AdminToken, "/v1/audit?action=activation_token_expired&user_id="+lateID)
		return len(expired) > 0
	}, 10*time.Second, 100*time.Millisecond, "no activation_token_expired for the late token")
	require.Len(t, expired, 1)
	assert.True(t, c1xTime(t, c1xDetails(t, expired[0])["expired_at"]).Equal(lateExp), "expired_at %v, expires_at %s", c1xDetails(t, expired[0])["expired_at"], lateExp)
	assert.Empty(t, s.Audit(t, "action=activation_token_expired&user_id="+earlyID), "the used token expired")
}

// C19: the same instant in Z, -07:00 and +13:00 selects the same audit rows;
// from is inclusive, to exclusive.
func TestC19_AuditTimeFilters(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id := s.RegisterUser(t, uniqueEmail(t), "C19 name 0")
	for i := 1; i <= 3; i++ {
		r := s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"name": fmt.Sprintf("C19 name %d", i)})
		require.Equal(t, http.StatusOK, r.Status, "update %d: %s", i, r)
	}
	rows := s.Audit(t, "user_id="+id)
	require.Len(t, rows, 4, "user_created and three user_updated")
	times := make([]time.Time, len(rows))
	for i, row := range rows {
		times[i] = c1xTime(t, row["occurred_at"])
		if i > 0 {
			require.True(t, times[i-1].Before(times[i]), "rows %d and %d share an instant", i-1, i)
		}
	}

	zones := []*time.Location{time.UTC, time.FixedZone("", -7*3600), time.FixedZone("", 13*3600)}
	forms := func(at time.Time) []string {
		out := make([]string, len(zones))
		for i, z := range zones {
			out[i] = at.In(z).Format(time.RFC3339Nano)
		}
		return out
	}
	query := func(kv ...string) string {
		q := url.Values{"user_id": {id}}
		for i := 0; i < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q.Encode()
	}
	pivot := times[2]
	f := forms(pivot)
	require.True(t, strings.HasSuffix(f[0], "Z") && strings.HasSuffix(f[1], "-07:00") && strings.HasSuffix(f[2], "+13:00"), "forms %v", f)
	for _, at := range f {
		assert.Equal(t, rows[2:], s.Audit(t, query("from", at)), "from=%s (inclusive)", at)
		assert.Equal(t, rows[:2], s.Audit(t, query("to", at)), "to=%s (exclusive)", at)
		assert.Equal(t, rows[2:], s.pages(t, "/v1/users/"+id+"/events", query("from", at)), "events from=%s", at)
		assert.Equal(t, rows[:2], s.pages(t, "/v1/users/"+id+"/events", query("to", at)), "events to=%s", at)
	}
	for _, at := range forms(pivot.Add(time.Microsecond)) {
		assert.Equal(t, rows[3:], s.Audit(t, query("from", at)), "from one microsecond after a row")
		assert.Equal(t, rows[:3], s.Audit(t, query("to", at)), "to one microsecond after a row")
	}
	from, to := forms(times[1]), forms(times[3])
	for i := range zones {
		j := (i + 1) % len(zones)
		assert.Equal(t, rows[1:3], s.Audit(t, query("from", from[i], "to", to[j])), "from=%s to=%s", from[i], to[j])
	}

	r := s.Do(t, http.MethodGet, "/v1/audit?"+query("from", f[1], "to", f[2]), s.AdminToken, nil)
	c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_time_range", "from equal to to")
	assert.Contains(t, r.JSON(t)["detail"], "inclusive", "the problem documents the bounds")
	r = s.Do(t, http.MethodGet, "/v1/audit?"+query("from", pivot.UTC().Format("2006-01-02T15:04:05")), s.AdminToken, nil)
	c1xAssertProblem(t, r, http.StatusBadRequest, "invalid_parameter", "a time without an offset")
}

// C20: rejected commands leave no audit row; a deleted user is never later
// deactivated; the audit rebuilt from the log equals the live one.
func TestC20_AuditTruth(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	activeID, activeEmail := s.NewActiveUser(t, "C20 active")
	member, _ := s.Login(t, activeEmail, userPassword)
	goneID, goneEmail := s.NewActiveUser(t, "C20 deleted")
	s.Login(t, goneEmail, userPassword)
	r := s.Do(t, http.MethodDelete, "/v1/users/"+goneID, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "delete: %s", r)
	// C10 checks that the answer already shows the revocation; here the
	// snapshot must simply be complete.
	c1xWaitAudited(t, s, "action=session_revoked&user_id="+goneID, 1)

	before := s.Audit(t, "")
	admin := s.AdminToken
	rejected := []struct {
		name, method, path, token string
		body                      any
		header                    []string
		status                    int
		code                      string
	}{
		{"duplicate address", http.MethodPost, "/v1/users", admin, map[string]any{"email": activeEmail, "name": "dup"}, nil, 409, "email_taken"},
		{"invalid address", http.MethodPost, "/v1/users", admin, map[string]any{"email": "not an address", "name": "x"}, nil, 422, "validation_failed"},
		{"short password", http.MethodPost, "/v1/users", "", map[string]any{"email": uniqueEmail(t), "name": "x", "password": "short"}, nil, 422, "validation_failed"},
		{"unknown field", http.MethodPost, "/v1/users", admin, map[string]any{"email": uniqueEmail(t), "name": "x", "nick": "y"}, nil, 400, "unknown_field"},
		{"member grants admin", http.MethodPost, "/v1/users", member, map[string]any{"email": uniqueEmail(t), "name": "x", "roles": []string{"admin"}}, nil, 403, "forbidden"},
		{"token for an active user", http.MethodPost, "/v1/users/" + activeID + "/activation-requests", admin, nil, nil, 409, "already_active"},
		{"unknown token", http.MethodPost, "/v1/activations", "", map[string]any{"token": c1xFakeToken(t)}, nil, 400, "invalid_token"},
		{"malformed token", http.MethodPost, "/v1/activations", "", map[string]any{"token": "nonsense"}, nil, 400, "invalid_token"},
		{"unknown user", http.MethodPost, "/v1/users/" + uuid.NewString() + "/deactivate", admin, nil, nil, 404, "user_not_found"},
		{"stale If-Match", http.MethodPatch, "/v1/users/" + activeID, admin, map[string]any{"name": "stale"}, []string{"If-Match", `"0"`}, 412, "precondition_failed"},
		{"empty name", http.MethodPatch, "/v1/users/" + activeID, admin, map[string]any{"name": " "}, nil, 422, "validation_failed"},
		{"member deactivates", http.MethodPost, "/v1/users/" + activeID + "/deactivate", member, nil, nil, 403, "forbidden"},
		{"member changes roles", http.MethodPatch, "/v1/users/" + activeID, member, map[string]any{"roles": []string{"admin"}}, nil, 403, "forbidden"},
		{"wrong password", http.MethodPost, "/v1/sessions", "", map[string]any{"email": activeEmail, "password": "wrong-password"}, nil, 401, "invalid_credentials"},
		{"deleted user logs in", http.MethodPost, "/v1/sessions", "", map[string]any{"email": goneEmail, "password": userPassword}, nil, 401, "invalid_credentials"},
		{"deactivate deleted", http.MethodPost, "/v1/users/" + goneID + "/deactivate", admin, nil, nil, 409, "user_deleted"},
		{"suspend deleted", http.MethodPost, "/v1/users/" + goneID + "/suspend", admin, nil, nil, 409, "user_deleted"},
		{"activate deleted", http.MethodPost, "/v1/users/" + goneID + "/activate", admin, nil, nil, 409, "user_deleted"},
		{"update deleted", http.MethodPatch, "/v1/users/" + goneID, admin, map[string]any{"name": "ghost"}, nil, 409, "user_deleted"},
		{"token for deleted", http.MethodPost, "/v1/users/" + goneID + "/activation-requests", admin, nil, nil, 409, "user_deleted"},
		{"delete deleted", http.MethodDelete, "/v1/users/" + goneID, admin, nil, nil, 409, "user_deleted"},
		{"revoke unknown session", http.MethodDelete, "/v1/sessions/" + uuid.NewString(), admin, nil, nil, 404, "session_not_found"},
	}
	for _, c := range rejected {
		r := s.Do(t, c.method, c.path, c.token, c.body, c.header...)
		c1xAssertProblem(t, r, c.status, c.code, c.name)
	}
	assert.Equal(t, before, c1xAuditAfterSentinel(t, s), "rejected commands changed the audit trail")

	// Deletion racing deactivation and suspension: whatever wins, nothing
	// happens to a user after its deletion.
	var racers []string
	for i := range 6 {
		id, _ := s.NewActiveUser(t, fmt.Sprintf("C20 racer %d", i))
		racers = append(racers, id)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i, id := range racers {
		other := "/deactivate"
		if i%2 == 1 {
			other = "/suspend"
		}
		for _, req := range [][2]string{{http.MethodDelete, ""}, {http.MethodPost, other}} {
			wg.Go(func() {
				r, err := s.Try(req[0], "/v1/users/"+id+req[1], admin, nil)
				if err != nil || r.Status >= 500 || (r.Status != http.StatusOK && r.Status != http.StatusConflict) {
					bad.Add(1)
				}
			})
		}
	}
	wg.Wait()
	assert.Zero(t, bad.Load(), "racing delete/deactivate answered other than 200/409")
	for _, id := range append(racers, goneID) {
		c1xAssertNothingAfterDelete(t, s.UserEvents(t, id), id)
	}

	// An audit rebuilt from the log equals the live one, once the live one
	// has everything the races and their cleanup appended.
	s.Settled(t)
	live := s.Audit(t, "")
	liveUsers := s.Users(t, "")
	s.Stop()
	out, err := s.CLI(t, "rebuild")
	require.NoError(t, err, "rebuild")
	t.Logf("rebuild: %s", strings.TrimSpace(out))
	s.Restart(t)
	rebuilt := s.Audit(t, "")
	require.GreaterOrEqual(t, len(rebuilt), len(live), "rebuilt audit is shorter than the live one")
	assert.Equal(t, live, rebuilt[:len(live)], "rebuilt audit differs from the live one")
	for _, row := range rebuilt[len(live):] {
		// Only what happened since: the harness logs the admin in after a start.
		assert.Equal(t, "user_logged_in", row["action"], "new row after rebuild: %v", row)
		assert.Equal(t, s.AdminID, row["user_id"], "new row after rebuild: %v", row)
	}
	assert.Equal(t, liveUsers, s.Users(t, ""), "rebuilt users differ from the live ones")
	for _, id := range append(racers, goneID) {
		c1xAssertNothingAfterDelete(t, s.UserEvents(t, id), id)
	}
}

// ---------------------------------------------------------------------------
// The embedded store under load

// C21: 50 parallel writers (for EVIDENT_C21_SECONDS, default 10): no 5xx, no
// "database is locked" reaches a client, every 2xx survives a kill -9 and is
// audited exactly once.
func TestC21_ConcurrentWritersOnSQLite(t *testing.T) {
	t.Parallel()
	run := 10 * time.Second
	if v := os.Getenv("EVIDENT_C21_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "EVIDENT_C21_SECONDS")
		require.Positive(t, n, "EVIDENT_C21_SECONDS")
		run = time.Duration(n) * time.Second
	}
	const writers = 50
	s := startServer(t)
	admin := s.AdminToken

	var (
		mu       sync.Mutex
		failures []string
		expected = map[string][]string{} // user id -> audit actions confirmed by a 2xx, in order
		requests atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	confirm := func(id, action string) {
		mu.Lock()
		expected[id] = append(expected[id], action)
		mu.Unlock()
	}
	// ok checks one answer: never a 5xx, never the driver's lock error, and
	// 2xx for these uncontended writes.
	ok := func(what string, r *Response, err error) bool {
		requests.Add(1)
		if err != nil {
			fail("%s: %v", what, err)
			return false
		}
		low := bytes.ToLower(r.Body)
		if bytes.Contains(low, []byte("database is locked")) || bytes.Contains(low, []byte("sqlite_busy")) {
			fail("%s: lock error reached the client: %s", what, r)
		}
		if r.Status/100 != 2 {
			fail("%s: %s", what, r)
			return false
		}
		return true
	}

	deadline := time.Now().Add(run)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				email := uniqueEmail(t)
				r, err := s.Try(http.MethodPost, "/v1/users", admin, map[string]any{"email": email, "name": fmt.Sprintf("C21 w%d #%d", w, i)})
				if !ok("register "+email, r, err) {
					continue
				}
				var u struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(r.Body, &u); err != nil || u.ID == "" {
					fail("register %s: no id: %s", email, r)
					continue
				}
				confirm(u.ID, "user_created")
				steps := []struct {
					method, suffix, action string
					body                   any
				}{
					{http.MethodPost, "/activate", "user_activated", nil},
					{http.MethodPatch, "", "user_updated", map[string]any{"name": fmt.Sprintf("C21 w%d #%d renamed", w, i)}},
					{http.MethodPost, "/deactivate", "user_deactivated", map[string]any{"reason": "c21"}},
				}
				for _, st := range steps {
					r, err := s.Try(st.method, "/v1/users/"+u.ID+st.suffix, admin, st.body)
					if !ok(st.action+" "+u.ID, r, err) {
						break
					}
					confirm(u.ID, st.action)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("C21: %d writers, %s, %d requests, %d users", writers, run, requests.Load(), len(expected))
	if len(failures) > 20 {
		failures = append(failures[:20], fmt.Sprintf("… and %d more", len(failures)-20))
	}
	assert.Empty(t, failures, "failed requests")
	require.NotEmpty(t, expected, "no user was registered")

	// Every 2xx survives a kill -9.
	s.Kill()
	s.Restart(t)

	status := map[string]string{"user_created": "pending", "user_activated": "active", "user_updated": "", "user_deactivated": "inactive"}
	actual := map[string][]string{}
	for _, row := range s.Audit(t, "") {
		if row["aggregate_type"] == "user" {
			id, _ := row["aggregate_id"].(string)
			actual[id] = append(actual[id], row["action"].(string))
		}
	}
	users := map[string]map[string]any{}
	for _, u := range s.Users(t, "") {
		users[u["id"].(string)] = u
	}
	missing := 0
	for id, want := range expected {
		if !assert.Equal(t, want, actual[id], "audit of user %s", id) {
			missing++
		}
		wantStatus := ""
		for _, a := range want {
			if st := status[a]; st != "" {
				wantStatus = st
			}
		}
		u, found := users[id]
		if !assert.True(t, found, "user %s answered 2xx but is not listed", id) {
			continue
		}
		assert.Equal(t, wantStatus, u["status"], "status of user %s", id)
		if missing > 20 {
			break
		}
	}
	assert.Len(t, users, len(expected)+1, "users listed (the writers' and the admin)")
}

// ---------------------------------------------------------------------------
// Helpers of these cases (prefixed c1x to keep the package namespace clear).

// c1xAssertProblem checks a problem answer's status and stable code.
func c1xAssertProblem(t testing.TB, r *Response, status int, code, what string) {
	t.Helper()
	if !assert.Equal(t, status, r.Status, "%s: %s", what, r) {
		return
	}
	var p struct {
		Code string `json:"code"`
	}
	if assert.NoError(t, json.Unmarshal(r.Body, &p), "%s: %s", what, r) {
		assert.Equal(t, code, p.Code, "%s: %s", what, r)
	}
	assert.Contains(t, r.Header.Get("Content-Type"), "application/problem+json", "%s", what)
}

// c1xItems requires a 200 list answer and returns its items.
func c1xItems(t testing.TB, r *Response) []map[string]any {
	t.Helper()
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	var page struct {
		Items []map[string]any `json:"items"`
	}
	r.Decode(t, &page)
	return page.Items
}

// c1xTryItems is a single-page list read for use inside require.Eventually.
func c1xTryItems(s *Server, token, path string) ([]map[string]any, error) {
	r, err := s.Try(http.MethodGet, path, token, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, r)
	}
	var page struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		return nil, err
	}
	return page.Items, nil
}

// c1xField collects one string field of each row.
func c1xField(rows []map[string]any, key string) []string {
	out := make([]string, 0, len(rows))
	for _, r := range rows {
		v, _ := r[key].(string)
		out = append(out, v)
	}
	return out
}

// c1xDetails returns an audit row's details object.
func c1xDetails(t testing.TB, row map[string]any) map[string]any {
	t.Helper()
	d, ok := row["details"].(map[string]any)
	require.True(t, ok, "audit row without details object: %v", row)
	return d
}

// c1xTime parses an RFC 3339 time from a JSON value.
func c1xTime(t testing.TB, v any) time.Time {
	t.Helper()
	s, ok := v.(string)
	require.True(t, ok, "time %v is not a string", v)
	at, err := time.Parse(time.RFC3339Nano, s)
	require.NoError(t, err, "time %q", s)
	return at
}

// c1xGetUser reads a user as the admin.
func c1xGetUser(t testing.TB, s *Server, id string) map[string]any {
	t.Helper()
	r := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "get user %s: %s", id, r)
	return r.JSON(t)
}

// c1xLogin logs in and returns the token, the session id and expires_at.
func c1xLogin(t testing.TB, s *Server, email, password string) (token, sid string, expires time.Time) {
	t.Helper()
	r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": password})
	require.Equal(t, http.StatusCreated, r.Status, "login %s: %s", email, r)
	m := r.JSON(t)
	token, _ = m["token"].(string)
	sid, _ = m["session_id"].(string)
	require.NotEmpty(t, token)
	require.NotEmpty(t, sid)
	return token, sid, c1xTime(t, m["expires_at"])
}

// c1xRefreshAdmin logs the admin in again (for servers with short sessions).
func c1xRefreshAdmin(t testing.TB, s *Server) {
	t.Helper()
	s.AdminToken, _ = s.Login(t, adminEmail, adminPassword)
}

// c1xWaitExpired waits until the audit holds a session_expired row for sid
// and returns it; every poll logs the admin in afresh, as sessions are short.
func c1xWaitExpired(t *testing.T, s *Server, userID, sid string) map[string]any {
	t.Helper()
	var (
		found   map[string]any
		lastErr error
	)
	ok := assert.Eventually(t, func() bool {
		r, err := s.Try(http.MethodPost, "/v1/sessions", "", map[string]any{"email": adminEmail, "password": adminPassword})
		if err != nil || r.Status != http.StatusCreated {
			lastErr = fmt.Errorf("admin login: %v %v", err, r)
			return false
		}
		var m struct {
			Token string `json:"token"`
		}
		if lastErr = json.Unmarshal(r.Body, &m); lastErr != nil {
			return false
		}
		rows, err := c1xTryItems(s, m.Token, "/v1/audit?action=session_expired&limit=500&user_id="+userID)
		if lastErr = err; err != nil {
			return false
		}
		for _, row := range rows {
			if row["aggregate_id"] == sid {
				found = row
				return true
			}
		}
		return false
	}, 15*time.Second, 200*time.Millisecond, "no session_expired for session %s", sid)
	require.True(t, ok, "last error: %v", lastErr)
	c1xRefreshAdmin(t, s)
	var rows []map[string]any
	for _, row := range s.Audit(t, "action=session_expired&user_id="+userID) {
		if row["aggregate_id"] == sid {
			rows = append(rows, row)
		}
	}
	assert.Len(t, rows, 1, "session_expired rows for session %s", sid)
	return found
}

// c1xWaitAudited waits until the audit holds n rows matching query.
func c1xWaitAudited(t *testing.T, s *Server, query string, n int) {
	t.Helper()
	var rows []map[string]any
	require.Eventually(t, func() bool {
		rows, _ = c1xTryItems(s, s.AdminToken, "/v1/audit?limit=500&"+query)
		return len(rows) >= n
	}, 10*time.Second, 50*time.Millisecond, "audit %s never reached %d rows", query, n)
	require.Len(t, rows, n, "audit %s", query)
}

// c1xAuditAfterSentinel returns the whole audit trail once the projections
// have processed everything written so far: it writes a sentinel (a new
// user, whose answer waits for the projections) and leaves its rows out.
func c1xAuditAfterSentinel(t testing.TB, s *Server) []map[string]any {
	t.Helper()
	sentinel := s.RegisterUser(t, uniqueEmail(t), "sentinel")
	rows := s.Audit(t, "")
	return slices.DeleteFunc(rows, func(r map[string]any) bool { return r["user_id"] == sentinel })
}

// c1xAssertNothingAfterDelete checks that a user's audit has one deletion and
// no user event after it (its sessions may still be revoked).
func c1xAssertNothingAfterDelete(t testing.TB, rows []map[string]any, id string) {
	t.Helper()
	deleted := slices.IndexFunc(rows, func(r map[string]any) bool { return r["action"] == "user_deleted" })
	if !assert.GreaterOrEqual(t, deleted, 0, "user %s has no user_deleted row", id) {
		return
	}
	for _, r := range rows[deleted+1:] {
		assert.NotEqual(t, "user", r["aggregate_type"], "user %s: %v after its deletion", id, r["action"])
		if r["aggregate_type"] == "session" {
			assert.Equal(t, "session_revoked", r["action"], "user %s: session event after deletion", id)
		}
	}
}

// c1xFakeToken is a well-formed activation token nobody issued.
func c1xFakeToken(t testing.TB) string {
	t.Helper()
	buf := make([]byte, 48)
	_, err := rand.Read(buf)
	require.NoError(t, err)
	id := uuid.New()
	copy(buf, id[:])
	return "evat_" + base64.RawURLEncoding.EncodeToString(buf)
}
