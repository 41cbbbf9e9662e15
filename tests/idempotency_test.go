package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyedAttempt is a registration sent with an Idempotency-Key whose first
// answer the client never saw.
type keyedAttempt struct {
	key, email string
	body       map[string]any
}

// retryKeyed retries every attempt with its own key until none is answered
// idempotency_key_in_use any more (the first request can no longer be
// running), then checks that each retry got the registration's one true
// answer: 201 naming the only user with that address, audited once.
func retryKeyed(t *testing.T, s *Server, attempts []keyedAttempt) {
	t.Helper()
	answers := make([]*Response, len(attempts))
	inUse := func() []string {
		var stuck []string
		for i, a := range attempts {
			if answers[i] != nil && answers[i].Status != http.StatusConflict {
				continue
			}
			r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
			if err != nil {
				stuck = append(stuck, a.key+": "+err.Error())
				continue
			}
			answers[i] = r
			var p struct{ Code string }
			_ = json.Unmarshal(r.Body, &p)
			if p.Code == "idempotency_key_in_use" {
				stuck = append(stuck, a.key)
			}
		}
		return stuck
	}
	// A first request still running is bounded by the read-your-writes wait
	// (5s). The embedded store frees a dead process's claims at start; on
	// PostgreSQL, shared by other instances, a claim is taken over once its
	// lease (3 × the wait + 5s = 20s) has run out.
	deadline := time.Now().Add(8 * time.Second)
	if onPostgres() {
		deadline = time.Now().Add(25 * time.Second)
	}
	stuck := inUse()
	for len(stuck) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		stuck = inUse()
	}
	assert.Empty(t, stuck, "%d of %d keys are still 'in use' long after their request ended: a retry can never succeed", len(stuck), len(attempts))

	created := countBy(s.Audit(t, "action=user_created"), "user_id")
	for i, a := range attempts {
		r := answers[i]
		rows := s.Users(t, "email="+url.QueryEscape(a.email))
		if !assert.Len(t, rows, 1, "key %s: the retry leaves exactly one user with its address; retry answered %s", a.key, r) {
			continue
		}
		uid, _ := rows[0]["id"].(string)
		assert.Equal(t, 1, created[uid], "key %s: user_created rows", a.key)
		if assert.NotNil(t, r, "key %s", a.key) && assert.Equal(t, http.StatusCreated, r.Status, "key %s: the retry gets the first answer: %s", a.key, r) {
			assert.Equal(t, uid, r.JSON(t)["id"], "key %s: the answer names the user created", a.key)
		}
	}
}

// TestC08_KeyedRetryAfterClientDisconnect: a client gives up on a keyed
// command at every moment of its life and retries with the same key. The
// retry must get the command's answer (run once), never a key stuck "in use".
func TestC08_KeyedRetryAfterClientDisconnect(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var attempts []keyedAttempt
	for i := range 30 {
		a := keyedAttempt{key: fmt.Sprintf("c08-disconnect-%d-%d", time.Now().UnixNano(), i), email: uniqueEmail(t)}
		a.body = map[string]any{"email": a.email, "name": "Impatient"}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(200+i*200)*time.Microsecond)
		r, err := s.TryContext(ctx, http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
		cancel()
		if err == nil {
			assert.Equal(t, http.StatusCreated, r.Status, "%s", r)
		}
		attempts = append(attempts, a)
	}
	retryKeyed(t, s, attempts)
}

// TestC08_KeyedRetryAfterKill: keyed registrations in flight when the server
// is killed are retried with their keys after the restart; answered ones replay.
func TestC08_KeyedRetryAfterKill(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var (
		mu       sync.Mutex
		inflight []keyedAttempt
		acked    = map[string]*Response{}
		ackedAt  = map[string]keyedAttempt{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := keyedAttempt{key: fmt.Sprintf("c08-kill-%d-%d-%d", time.Now().UnixNano(), w, i),
					email: fmt.Sprintf("c08-kill-%d-%d-%d@example.test", time.Now().UnixNano(), w, i)}
				a.body = map[string]any{"email": a.email, "name": "Crash"}
				r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
				mu.Lock()
				switch {
				case err != nil:
					inflight = append(inflight, a)
				case r.Status == http.StatusCreated:
					acked[a.key], ackedAt[a.key] = r, a
				}
				mu.Unlock()
				if err != nil {
					<-stop // the server is gone: this worker is done
					return
				}
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 40
	}, 20*time.Second, 10*time.Millisecond, "the load made no progress")
	time.Sleep(100 * time.Millisecond)
	s.Kill()
	close(stop)
	wg.Wait()
	t.Logf("%d keyed registrations acknowledged, %d in flight at the kill", len(acked), len(inflight))

	s.Restart(t)
	retryKeyed(t, s, inflight)

	// Answers given before the kill are replayed after it.
	n := 0
	for key, first := range acked {
		if n++; n > 10 {
			break
		}
		r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, ackedAt[key].body, "Idempotency-Key", key)
		assert.Equal(t, http.StatusCreated, r.Status, "replay of %s after the restart: %s", key, r)
		assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"), "replay of %s", key)
		assert.JSONEq(t, string(first.Body), string(r.Body), "replay of %s", key)
	}
}

// TestC08_KeyedRetryAfterTheTokenIsSpent: a keyed command that ends the
// session it was sent with (log out, revoke one's own session) is retried
// with the same token and key. The retry gets the first answer, headers
// included, not a 401, and nothing runs twice.
func TestC08_KeyedRetryAfterTheTokenIsSpent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	key := func(what string) string { return fmt.Sprintf("c08-spent-%s-%d", what, time.Now().UnixNano()) }
	retried := func(t *testing.T, method, path, token string, body any, k string) *Response {
		t.Helper()
		first := s.Do(t, method, path, token, body, "Idempotency-Key", k)
		require.Equal(t, http.StatusOK, first.Status, "%s", first)
		require.NotEmpty(t, first.Header.Get("ETag"), "the first answer carries the version")
		r := s.Do(t, http.MethodGet, "/v1/users?limit=1", token, nil)
		assertProblem(t, r, http.StatusUnauthorized, "unauthenticated", "the token is spent")
		for i := range 2 {
			again := s.Do(t, method, path, token, body, "Idempotency-Key", k)
			if !assert.Equal(t, first.Status, again.Status, "retry %d: %s", i, again) {
				continue
			}
			assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"), "retry %d", i)
			assert.JSONEq(t, string(first.Body), string(again.Body), "retry %d", i)
			assert.Equal(t, first.Header.Get("ETag"), again.Header.Get("ETag"), "retry %d", i)
			assert.Equal(t, "application/json", again.Header.Get("Content-Type"), "retry %d", i)
		}
		return first
	}
	newAdmin := func(t *testing.T) (id, token string) {
		email := uniqueEmail(t)
		r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": email, "name": "Admin", "roles": []string{"admin"}})
		require.Equal(t, http.StatusCreated, r.Status, "%s", r)
		id, _ = r.JSON(t)["id"].(string)
		s.ActivateUser(t, id, userPassword)
		token, _ = s.Login(t, email, userPassword)
		return id, token
	}

	t.Run("logout", func(t *testing.T) {
		uid, email := s.NewActiveUser(t, "Leaving")
		tok, sid := s.Login(t, email, userPassword)
		first := retried(t, http.MethodDelete, "/v1/sessions/current", tok, nil, key("logout"))
		assert.Equal(t, sid, first.JSON(t)["session_id"])
		assert.Len(t, s.Audit(t, "user_id="+uid+"&action=user_logged_out"), 1, "logged out once")
	})
	t.Run("revoke own session", func(t *testing.T) {
		uid, email := s.NewActiveUser(t, "Revoker")
		tok, sid := s.Login(t, email, userPassword)
		retried(t, http.MethodDelete, "/v1/sessions/"+sid, tok, map[string]any{"reason": "lost phone"}, key("revoke"))
		assert.Len(t, s.Audit(t, "user_id="+uid+"&action=session_revoked"), 1, "revoked once")
	})
	// An admin cannot end their own account (409 self_lockout): the last
	// admin would lock everyone out. Another admin can, and nothing of the
	// refusals is written.
	t.Run("admin cannot end self", func(t *testing.T) {
		id, tok := newAdmin(t)
		for _, c := range []struct {
			method, path string
			body         any
		}{
			{http.MethodPost, "/v1/users/" + id + "/deactivate", nil},
			{http.MethodPost, "/v1/users/" + id + "/suspend", nil},
			{http.MethodDelete, "/v1/users/" + id, nil},
			{http.MethodPatch, "/v1/users/" + id, map[string]any{"roles": []string{"member"}}},
		} {
			r := s.Do(t, c.method, c.path, tok, c.body, "Idempotency-Key", key("self"))
			assertProblem(t, r, http.StatusConflict, "self_lockout", c.method+" "+c.path)
		}
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, tok, nil)
		require.Equal(t, http.StatusOK, r.Status, "the token still works: %s", r)
		assert.Equal(t, "active", r.JSON(t)["status"])
		assert.Contains(t, r.JSON(t)["roles"], "admin")
		r = s.Do(t, http.MethodPatch, "/v1/users/"+id, tok, map[string]any{"roles": []string{"admin", "auditor"}})
		assert.Equal(t, http.StatusOK, r.Status, "keeping admin while adding a role: %s", r)
		r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, map[string]any{"reason": "leaving"})
		require.Equal(t, http.StatusOK, r.Status, "another admin may: %s", r)
		assert.Len(t, s.Audit(t, "user_id="+id+"&action=user_deactivated"), 1, "deactivated once")
	})
}

// TestC08_SpentTokenGetsOnlyItsOwnAnswers: the replay a spent token may get
// is the answer its own session was given for that very request. Anyone
// else, and that token with any other key or request, gets 401 and runs
// nothing.
func TestC08_SpentTokenGetsOnlyItsOwnAnswers(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	uid, email := s.NewActiveUser(t, "Owner")
	tok, _ := s.Login(t, email, userPassword)
	other, _ := s.Login(t, email, userPassword) // another session of the same user
	k := fmt.Sprintf("c08-own-%d", time.Now().UnixNano())
	r := s.Do(t, http.MethodDelete, "/v1/sessions/current", tok, nil, "Idempotency-Key", k)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	r = s.Do(t, http.MethodDelete, "/v1/sessions/current", other, nil, "Idempotency-Key", k+"-other")
	require.Equal(t, http.StatusOK, r.Status, "%s", r)

	_, strangerEmail := s.NewActiveUser(t, "Stranger")
	stranger, _ := s.Login(t, strangerEmail, userPassword)
	r = s.Do(t, http.MethodDelete, "/v1/sessions/current", stranger, nil, "Idempotency-Key", k+"-stranger")
	require.Equal(t, http.StatusOK, r.Status, "%s", r)

	// The token with its secret changed names the same session.
	last := tok[len(tok)-1]
	forged := tok[:len(tok)-1] + map[bool]string{true: "B", false: "A"}[last == 'A']

	for _, c := range []struct {
		name, token, key string
		body             any
	}{
		{"the same token, no key", tok, "", nil},
		{"the same token, an unknown key", tok, k + "-unknown", nil},
		{"the same token and key, another request", tok, k, map[string]any{}},
		{"another spent session of the same user", other, k, nil},
		{"another user's spent session", stranger, k, nil},
		{"a forged token naming the session", forged, k, nil},
		{"a token never issued", "evs_not-a-token", k, nil},
		{"no token at all", "", k, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var h []string
			if c.key != "" {
				h = []string{"Idempotency-Key", c.key}
			}
			r := s.Do(t, http.MethodDelete, "/v1/sessions/current", c.token, c.body, h...)
			assertProblem(t, r, http.StatusUnauthorized, "unauthenticated")
			assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
			assert.NotEmpty(t, r.Header.Get("WWW-Authenticate"))
		})
	}
	assert.Len(t, s.Audit(t, "user_id="+uid+"&action=user_logged_out"), 2, "each session logged out once")
}

// TestC08_ReplayKeepsTheAnswersHeaders: a replay carries the first answer's
// own headers (ETag, Location, Content-Type, Preference-Applied), and the
// retry's own request id, not the first one's.
func TestC08_ReplayKeepsTheAnswersHeaders(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	k := fmt.Sprintf("c08-headers-%d", time.Now().UnixNano())
	same := func(t *testing.T, first, again *Response, names ...string) {
		t.Helper()
		assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
		assert.Equal(t, first.Status, again.Status)
		assert.JSONEq(t, string(first.Body), string(again.Body))
		for _, n := range names {
			assert.NotEmpty(t, first.Header.Get(n), "the first answer has %s", n)
			assert.Equal(t, first.Header.Get(n), again.Header.Get(n), n)
		}
	}

	body := map[string]any{"email": uniqueEmail(t), "name": "Headers"}
	first := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, body, "Idempotency-Key", k+"-register", "X-Request-Id", "c08-first")
	require.Equal(t, http.StatusCreated, first.Status, "%s", first)
	again := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, body, "Idempotency-Key", k+"-register", "X-Request-Id", "c08-again")
	same(t, first, again, "ETag", "Location", "Content-Type")
	assert.Equal(t, "c08-again", again.Header.Get("X-Request-Id"), "the request id is the retry's own")
	id, _ := first.JSON(t)["id"].(string)

	patch := map[string]any{"name": "Renamed"}
	first = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, patch, "Idempotency-Key", k+"-patch", "If-Match", first.Header.Get("ETag"))
	require.Equal(t, http.StatusOK, first.Status, "%s", first)
	again = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, patch, "Idempotency-Key", k+"-patch", "If-Match", first.Header.Get("ETag"))
	same(t, first, again, "ETag", "Content-Type")

	first = s.Do(t, http.MethodPost, "/v1/users/"+id+"/suspend", s.AdminToken, nil, "Idempotency-Key", k+"-async", "Prefer", "respond-async")
	require.Equal(t, http.StatusOK, first.Status, "%s", first)
	again = s.Do(t, http.MethodPost, "/v1/users/"+id+"/suspend", s.AdminToken, nil, "Idempotency-Key", k+"-async")
	same(t, first, again, "ETag", "Preference-Applied")

	// A refusal is kept too, and replays as the problem it was.
	bad := map[string]any{"email": "not an address"}
	first = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, bad, "Idempotency-Key", k+"-bad")
	requireProblem(t, first, http.StatusUnprocessableEntity, "validation_failed")
	again = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, bad, "Idempotency-Key", k+"-bad")
	assertProblem(t, again, http.StatusUnprocessableEntity, "validation_failed", "replayed refusal")
	same(t, first, again, "Content-Type")
}

// A refusal of a keyed request that carried a secret is not kept: the
// fingerprint leaves passwords out, so the retry that corrects a mistyped
// password or token under the same key must run rather than get the refusal
// back. A success is kept, and replayed only to a request with the same
// token: the activation's answer names the user it activated.
func TestC08_KeyedRetryCorrectingASecretRuns(t *testing.T) {
	s := startServer(t)
	pending := s.RegisterUser(t, uniqueEmail(t), "Keyed Activation")
	tok := s.RequestActivation(t, pending)
	key := []string{"Idempotency-Key", "activate-" + pending}
	r := s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok + "x", "password": userPassword}, key...)
	require.GreaterOrEqual(t, r.Status, 400, "a mistyped token: %s", r)
	require.Less(t, r.Status, 500, "a mistyped token: %s", r)
	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": userPassword}, key...)
	require.Equal(t, http.StatusOK, r.Status, "the corrected retry activates: %s", r)
	assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": "another-password-1"}, key...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"), "the success is kept")

	r = s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": "evat_guessed", "password": userPassword}, key...)
	assertProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused", "the key without the token")
	assert.NotContains(t, string(r.Body), pending, "nothing of the first answer")
}

// A login is not replayed (its answer is a token, never kept): a keyed
// retry, after a mistyped password or after a success, logs in anew, and a
// wrong password under a key that once logged in is refused.
func TestKeyedLoginIsNotReplayed(t *testing.T) {
	s := startServer(t)
	_, email := s.NewActiveUser(t, "Keyed Login")
	key := []string{"Idempotency-Key", "login-" + email}
	r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": "mistyped-password"}, key...)
	assertProblem(t, r, http.StatusUnauthorized, "invalid_credentials", "keyed login, wrong password")
	sessions := map[string]bool{}
	for range 2 {
		r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword}, key...)
		require.Equal(t, http.StatusCreated, r.Status, "%s", r)
		assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
		tok, _ := r.JSON(t)["token"].(string)
		require.NotEmpty(t, tok, "every login answers with its token")
		sessions[r.JSON(t)["session_id"].(string)] = true
	}
	assert.Len(t, sessions, 2)
	r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": "mistyped-password"}, key...)
	assertProblem(t, r, http.StatusUnauthorized, "invalid_credentials", "a wrong password after successes")
}

// A logout names the caller's session: the same key from another session
// of the same user is another request, not a replay of the first logout.
func TestC08_KeyedLogoutFromAnotherSession(t *testing.T) {
	s := startServer(t)
	_, email := s.NewActiveUser(t, "Two Sessions")
	first, _ := s.Login(t, email, userPassword)
	second, _ := s.Login(t, email, userPassword)
	key := []string{"Idempotency-Key", "logout-" + email}
	r := s.Do(t, http.MethodDelete, "/v1/sessions/current", first, nil, key...)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	r = s.Do(t, http.MethodDelete, "/v1/sessions/current", second, nil, key...)
	assertProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused", "the second session's logout")
	r = s.Do(t, http.MethodGet, "/v1/users?email="+email, second, nil)
	assert.NotEqual(t, http.StatusUnauthorized, r.Status, "the second session is still open: it was not logged out, and was not told it was")
	r = s.Do(t, http.MethodDelete, "/v1/sessions/current", second, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
}
