package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The cases of /work/shared/cases/CASES.md, on the embedded SQLite store.

// TestC01_OutOfOrderCommits: concurrent registrations of mixed sizes are each
// readable, audited once, and counted, right after they were answered.
func TestC01_OutOfOrderCommits(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const runs, perRun = 2, 200
	names := []string{"A", strings.Repeat("ü", 200), strings.Repeat("Nameson ", 12), "Ω " + strings.Repeat("x", 150)}
	total := 1 // the bootstrap admin
	for run := range runs {
		type answer struct {
			status int
			id     string
			err    error
		}
		answers := make([]answer, perRun)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range perRun {
			wg.Go(func() {
				<-start
				body := map[string]any{"email": uniqueEmail(t), "name": names[i%len(names)]}
				if i%3 == 0 {
					body["password"] = userPassword
				}
				r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, body)
				if err != nil {
					answers[i] = answer{err: err}
					return
				}
				var v struct{ ID string }
				_ = json.Unmarshal(r.Body, &v)
				answers[i] = answer{status: r.Status, id: v.ID}
			})
		}
		close(start)
		wg.Wait()

		var ids []string
		for i, a := range answers {
			require.NoError(t, a.err, "run %d request %d", run, i)
			if assert.Equal(t, http.StatusCreated, a.status, "run %d request %d", run, i) {
				ids = append(ids, a.id)
			}
		}
		total += len(ids)

		// No waiting: a 201 promises that the read models have it.
		created := countBy(s.Audit(t, "action=user_created"), "user_id")
		for _, id := range ids {
			assert.Equal(t, 1, created[id], "run %d: user_created rows of %s", run, id)
		}
		assert.Len(t, created, total, "run %d: user_created rows", run)
		assert.Len(t, s.Users(t, ""), total, "run %d: users listed", run)
		for _, id := range ids[:20] {
			r := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
			assert.Equal(t, http.StatusOK, r.Status, "run %d: user %s: %s", run, id, r)
		}
	}
	assertUniqueEventIDs(t, s.Audit(t, ""))
}

// TestC02_DatabaseOutage needs a database server to stop.
func TestC02_DatabaseOutage(t *testing.T) {
	t.Skip("C02 needs a database server to stop: see TestPostgresC02_DatabaseOutage " +
		"(EVIDENT_TEST_STORE=postgres EVIDENT_TEST_DISRUPTIVE=1)")
}

// TestC03_FirstEvent: the very first event of an empty store is projected and
// audited, live and after a rebuild.
func TestC03_FirstEvent(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	check := func(stage string) map[string]any {
		t.Helper()
		r := s.Do(t, http.MethodGet, "/v1/audit?limit=1", s.AdminToken, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", stage, r)
		var page struct{ Items []map[string]any }
		r.Decode(t, &page)
		require.Len(t, page.Items, 1, "%s: the audit has a first row", stage)
		first := page.Items[0]
		assert.Equal(t, "user_created", first["action"], stage)
		assert.Equal(t, s.AdminID, first["user_id"], "%s: the first event is the bootstrap admin's", stage)

		// The first event of the admin's stream is the first event of the log.
		out, err := s.CLI(t, "stream", "user-"+s.AdminID)
		require.NoError(t, err)
		lines := streamLines(t, out)
		require.NotEmpty(t, lines, stage)
		assert.Equal(t, "user.created", lines[0]["type"], stage)
		assert.Equal(t, lines[0]["event_id"], first["event_id"], stage)
		assert.Equal(t, lines[0]["position"], first["position"], stage)
		assert.LessOrEqual(t, positionSeq(t, first), int64(1), "%s: nothing comes before the first event", stage)

		r = s.Do(t, http.MethodGet, "/v1/users/"+s.AdminID, s.AdminToken, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", stage, r)
		u := r.JSON(t)
		assert.Equal(t, adminEmail, u["email"], stage)
		assert.Equal(t, "active", u["status"], stage)
		assert.Contains(t, u["roles"], "admin", stage)
		return first
	}
	live := check("live")

	if !onPostgres() {
		// The data-directory lock; on PostgreSQL rebuild may run beside serve.
		_, err := s.CLI(t, "rebuild")
		assert.ErrorContains(t, err, "another evident process", "rebuild refuses to run beside serve")
	}

	s.Stop()
	out, err := s.CLI(t, "rebuild")
	require.NoError(t, err)
	for _, name := range []string{"users", "sessions", "activation_tokens", "audit"} {
		assert.Contains(t, out, "rebuilt "+name, "rebuild output")
	}
	s.Restart(t)
	rebuilt := check("after rebuild")
	assert.Equal(t, live, rebuilt, "the first audit row is the same after a rebuild")
	assert.Len(t, s.Users(t, ""), 1, "one user after the rebuild")
	assert.Len(t, s.Audit(t, "action=user_created"), 1, "one user_created after the rebuild")
}

// TestC04_ResumeAfterRestart: after a stop (and a kill) the projections resume
// exactly after their checkpoint: new events are projected, old ones not again.
func TestC04_ResumeAfterRestart(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for i := range 5 {
		s.RegisterUser(t, uniqueEmail(t), fmt.Sprintf("Before %d", i))
	}
	for _, how := range []string{"stop", "kill"} {
		before := s.Audit(t, "")
		users := len(s.Users(t, ""))
		if how == "stop" {
			s.Stop()
			assert.NoError(t, s.ExitErr(), "serve exits cleanly on SIGTERM")
		} else {
			s.Kill()
		}
		s.Restart(t) // the harness logs the admin in: one user_logged_in

		id := s.RegisterUser(t, uniqueEmail(t), "After "+how)
		r := s.Do(t, http.MethodPost, "/v1/users/"+id+"/activate", s.AdminToken, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s", r)

		u := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
		require.Equal(t, http.StatusOK, u.Status, "%s", u)
		assert.Equal(t, "active", u.JSON(t)["status"], how)
		assert.Equal(t, []string{"user_created", "user_activated"}, actions(s.UserEvents(t, id)), how)
		assert.Len(t, s.Users(t, ""), users+1, "%s: users", how)

		after := s.Audit(t, "")
		assertUniqueEventIDs(t, after)
		require.GreaterOrEqual(t, len(after), len(before), how)
		assert.Equal(t, before, after[:len(before)], "%s: the audit before the restart is untouched", how)
		assert.Equal(t, []string{"user_logged_in", "user_created", "user_activated"}, actions(after[len(before):]),
			"%s: only the admin's login and the two new events are new", how)
	}
}

// TestC05_DeletedStaysDeleted: a deleted user with a session stays deleted
// through a rebuild; no late session event brings a row back.
func TestC05_DeletedStaysDeleted(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "To Be Deleted")
	tok, sid := s.Login(t, email, userPassword)
	tok2, _ := s.Login(t, email, userPassword)

	r := s.Do(t, http.MethodDelete, "/v1/users/"+id, s.AdminToken, map[string]any{"reason": "c05"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "deleted", r.JSON(t)["status"])

	// A revoke of the (already revoked) session after the delete: a late session command.
	r = s.Do(t, http.MethodDelete, "/v1/sessions/"+sid, s.AdminToken, nil)
	assert.Less(t, r.Status, 500, "%s", r)

	check := func(stage string) {
		t.Helper()
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
		require.Equal(t, http.StatusOK, r.Status, "%s: %s", stage, r)
		assert.Equal(t, "deleted", r.JSON(t)["status"], stage)
		for _, tk := range []string{tok, tok2} {
			r = s.Do(t, http.MethodGet, "/v1/users/"+id, tk, nil)
			assertProblem(t, r, http.StatusUnauthorized, "unauthenticated", "%s: a token of a deleted user", stage)
		}
		r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
		assert.Equal(t, http.StatusUnauthorized, r.Status, "%s: login of a deleted user: %s", stage, r)
		open := s.pages(t, "/v1/users/"+id+"/sessions", "status=open")
		assert.Empty(t, open, "%s: open sessions", stage)
		for _, row := range s.Users(t, "") {
			if row["id"] == id {
				assert.Equal(t, "deleted", row["status"], "%s: listed row", stage)
			}
		}
		for _, row := range s.Users(t, "status=active") {
			assert.NotEqual(t, id, row["id"], "%s: a deleted user is not listed as active", stage)
		}
		acts := actions(s.UserEvents(t, id))
		assert.Equal(t, []string{"user_created", "user_activation_requested", "user_activated",
			"user_logged_in", "user_logged_in", "user_deleted", "session_revoked", "session_revoked"}, acts, "%s: history", stage)
		r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, nil)
		assertProblem(t, r, http.StatusConflict, "user_deleted", "%s: deactivate a deleted user", stage)
	}
	check("live")

	// Logins racing the delete: whatever lands after it is closed at once
	// for authentication and eventually in the read model, and never
	// brings the user back.
	raceID, raceEmail := s.NewActiveUser(t, "Racing Delete")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var raceTokens []string
	start := make(chan struct{})
	for range 10 {
		wg.Go(func() {
			<-start
			r, err := s.Try(http.MethodPost, "/v1/sessions", "", map[string]any{"email": raceEmail, "password": userPassword})
			if err != nil || r.Status != http.StatusCreated {
				return
			}
			var v struct {
				Token string `json:"token"`
			}
			if json.Unmarshal(r.Body, &v) == nil {
				mu.Lock()
				raceTokens = append(raceTokens, v.Token)
				mu.Unlock()
			}
		})
	}
	close(start)
	r = s.Do(t, http.MethodDelete, "/v1/users/"+raceID, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	wg.Wait()
	t.Logf("%d logins succeeded around the delete", len(raceTokens))
	for _, tk := range raceTokens {
		r = s.Do(t, http.MethodGet, "/v1/users/"+raceID, tk, nil)
		assertProblem(t, r, http.StatusUnauthorized, "unauthenticated", "a session of a deleted user")
	}
	require.Eventually(t, func() bool {
		open, err := s.TryPages("/v1/users/"+raceID+"/sessions", "status=open")
		return err == nil && len(open) == 0
	}, 5*time.Second, 50*time.Millisecond, "sessions opened around the delete are closed")
	// Every session the racing logins opened (answered 201 or refused with
	// user_not_active after landing behind the delete) is revoked once.
	require.Eventually(t, func() bool {
		opened, err1 := s.TryPages("/v1/audit", "user_id="+raceID+"&action=user_logged_in")
		revoked, err2 := s.TryPages("/v1/audit", "user_id="+raceID+"&action=session_revoked")
		return err1 == nil && err2 == nil && len(opened) == len(revoked) && len(opened) >= len(raceTokens)
	}, 5*time.Second, 50*time.Millisecond, "one revocation per session of the deleted user")

	// The counts above can agree before everything the race appended is
	// projected (none of the logins landed, say): compare settled read models.
	s.Settled(t)
	auditBefore := s.Audit(t, "user_id="+id)
	raceBefore := s.Audit(t, "user_id="+raceID)
	sessionsBefore := s.pages(t, "/v1/users/"+raceID+"/sessions", "")

	s.Stop()
	_, err := s.CLI(t, "rebuild")
	require.NoError(t, err)
	s.Restart(t)
	check("after rebuild")
	assert.Equal(t, auditBefore, s.Audit(t, "user_id="+id), "the user's audit is the same after a rebuild")
	assert.Equal(t, raceBefore, s.Audit(t, "user_id="+raceID), "the racing user's audit is the same after a rebuild")
	assert.Equal(t, sessionsBefore, s.pages(t, "/v1/users/"+raceID+"/sessions", ""), "sessions are the same after a rebuild")
	r = s.Do(t, http.MethodGet, "/v1/users/"+raceID, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "deleted", r.JSON(t)["status"], "the racing user is still deleted")

	// The address is free again; the new owner is a new user and the old one stays deleted.
	newID := s.RegisterUser(t, email, "Same Address")
	assert.NotEqual(t, id, newID)
	r = s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "deleted", r.JSON(t)["status"])
	r = s.Do(t, http.MethodGet, "/v1/users/"+newID, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "pending", r.JSON(t)["status"])
}

// TestC06_ReplayHasNoSideEffects: a rebuild appends nothing, issues no token
// and duplicates no audit row; the rebuilt tables equal the live ones.
func TestC06_ReplayHasNoSideEffects(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	// Some history of every kind.
	var ids []string
	for i := range 4 {
		id, email := s.NewActiveUser(t, fmt.Sprintf("Replay %d", i))
		ids = append(ids, id)
		s.Login(t, email, userPassword)
		s.Login(t, email, userPassword)
	}
	pending := s.RegisterUser(t, uniqueEmail(t), "Pending")
	s.RequestActivation(t, pending)
	s.RequestActivation(t, pending) // supersedes the first
	ids = append(ids, pending)
	r := s.Do(t, http.MethodPost, "/v1/users/"+ids[0]+"/deactivate", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	r = s.Do(t, http.MethodPost, "/v1/users/"+ids[1]+"/suspend", s.AdminToken, map[string]any{"reason": "c06"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	r = s.Do(t, http.MethodDelete, "/v1/users/"+ids[2], s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	r = s.Do(t, http.MethodPatch, "/v1/users/"+ids[3], s.AdminToken, map[string]any{"name": "Renamed"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)

	type snapshot struct {
		audit    []map[string]any
		users    []map[string]any
		sessions map[string][]map[string]any
		tokens   map[string][]map[string]any
	}
	take := func() snapshot {
		sn := snapshot{audit: s.Audit(t, ""), users: s.Users(t, ""),
			sessions: map[string][]map[string]any{}, tokens: map[string][]map[string]any{}}
		for _, id := range ids {
			sn.sessions[id] = s.pages(t, "/v1/users/"+id+"/sessions", "")
			sn.tokens[id] = s.pages(t, "/v1/users/"+id+"/activation-tokens", "")
		}
		return sn
	}
	s.Settled(t)
	before := take()
	assertUniqueEventIDs(t, before.audit)

	s.Stop()
	_, err := s.CLI(t, "rebuild")
	require.NoError(t, err)
	_, err = s.CLI(t, "rebuild", "audit", "sessions")
	require.NoError(t, err)
	s.Restart(t) // appends the admin's login, and nothing else
	after := take()

	assertUniqueEventIDs(t, after.audit)
	require.Len(t, after.audit, len(before.audit)+1, "a rebuild appends nothing (the one extra row is the admin's login)")
	assert.Equal(t, before.audit, after.audit[:len(before.audit)], "the audit rebuilt from the log equals the live one")
	last := after.audit[len(after.audit)-1]
	assert.Equal(t, "user_logged_in", last["action"])
	assert.Equal(t, s.AdminID, last["user_id"])
	assert.Equal(t, before.users, after.users, "users rebuilt equal users live")
	assert.Equal(t, before.sessions, after.sessions, "sessions rebuilt equal sessions live")
	assert.Equal(t, before.tokens, after.tokens, "activation tokens rebuilt equal the live ones: none issued")
}

// TestC07_AnswerMatchesStore: a 2xx command has its events in the log exactly
// once; a 4xx one has appended nothing.
func TestC07_AnswerMatchesStore(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	email := uniqueEmail(t)
	id := s.RegisterUser(t, email, "Seven")
	userPath := "/v1/users/" + id

	count := func() int { return len(s.Audit(t, "")) }
	step := func(name, method, path string, body any, wantStatus int, wantCode string, wantActions []string, header ...string) *Response {
		t.Helper()
		n := count()
		mine := len(s.UserEvents(t, id))
		r := s.Do(t, method, path, s.AdminToken, body, header...)
		if wantCode != "" {
			assertProblem(t, r, wantStatus, wantCode, name)
		} else {
			assert.Equal(t, wantStatus, r.Status, "%s: %s", name, r)
		}
		rows := s.Audit(t, "")
		assert.Len(t, rows, n+len(wantActions), "%s: audit rows appended", name)
		if len(rows) >= n {
			assert.Equal(t, wantActions, nilIfEmpty(actions(rows[n:])), name)
		}
		ev := s.UserEvents(t, id)
		assert.Len(t, ev, mine+len(wantActions), "%s: the user's events", name)
		if len(wantActions) > 0 && r.Status < 300 {
			// The answer's position is that of the append; an unaudited
			// e-mail claim event may come last in it.
			var v struct{ Position string }
			r.Decode(t, &v)
			answered := position(t, map[string]any{"position": v.Position})
			assert.LessOrEqual(t, position(t, rows[len(rows)-1]), answered, "%s: the answer's position covers what was appended", name)
			assert.Greater(t, position(t, rows[len(rows)-1]), position(t, rows[n-1]), name)
		}
		return r
	}

	step("register the same address again", http.MethodPost, "/v1/users", map[string]any{"email": strings.ToUpper(email), "name": "Dup"},
		http.StatusConflict, "email_taken", nil)
	step("register an invalid address", http.MethodPost, "/v1/users", map[string]any{"email": "nope", "name": "X"},
		http.StatusUnprocessableEntity, "validation_failed", nil)
	step("activate with a bogus token", http.MethodPost, "/v1/activations", map[string]any{"token": "evt_bogus", "password": userPassword},
		http.StatusBadRequest, "invalid_token", nil)
	r := step("activate", http.MethodPost, userPath+"/activate", nil, http.StatusOK, "", []string{"user_activated"})
	etag := r.Header.Get("ETag")
	assert.NotEmpty(t, etag, "a command answers its stream version as ETag")
	step("activate again", http.MethodPost, userPath+"/activate", nil, http.StatusOK, "", nil)
	step("request activation of an active user", http.MethodPost, userPath+"/activation-requests", nil,
		http.StatusConflict, "already_active", nil)
	step("rename with a stale If-Match", http.MethodPatch, userPath, map[string]any{"name": "Stale"},
		http.StatusPreconditionFailed, "precondition_failed", nil, "If-Match", `"0"`)
	step("rename with the current If-Match", http.MethodPatch, userPath, map[string]any{"name": "Fresh"},
		http.StatusOK, "", []string{"user_updated"}, "If-Match", etag)
	step("rename to the same name", http.MethodPatch, userPath, map[string]any{"name": "Fresh"}, http.StatusOK, "", nil)
	step("deactivate with a too long reason", http.MethodPost, userPath+"/deactivate", map[string]any{"reason": strings.Repeat("r", 501)},
		http.StatusUnprocessableEntity, "validation_failed", nil)
	step("deactivate", http.MethodPost, userPath+"/deactivate", nil, http.StatusOK, "", []string{"user_deactivated"})
	step("deactivate again", http.MethodPost, userPath+"/deactivate", nil, http.StatusOK, "", nil)
	step("suspend", http.MethodPost, userPath+"/suspend", nil, http.StatusOK, "", []string{"user_status_changed"})
	step("delete", http.MethodDelete, userPath, nil, http.StatusOK, "", []string{"user_deleted"})
	step("deactivate a deleted user", http.MethodPost, userPath+"/deactivate", nil, http.StatusConflict, "user_deleted", nil)
	step("activate a deleted user", http.MethodPost, userPath+"/activate", nil, http.StatusConflict, "user_deleted", nil)
	step("rename a deleted user", http.MethodPatch, userPath, map[string]any{"name": "Ghost"}, http.StatusConflict, "user_deleted", nil)
	step("delete again", http.MethodDelete, userPath, nil, http.StatusConflict, "user_deleted", nil)
	step("deactivate an unknown user", http.MethodPost, "/v1/users/0190f5a4-1c2b-7d3e-8f40-123456789abc/deactivate", nil,
		http.StatusNotFound, "user_not_found", nil)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// TestC08_RetriedCommands: repeating activate or deactivate, with or without
// one Idempotency-Key, appends one event per change.
func TestC08_RetriedCommands(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, _ := s.NewActiveUser(t, "Retry")
	path := "/v1/users/" + id
	count := func(action string) int { return len(s.Audit(t, "user_id="+id+"&action="+action)) }
	require.Equal(t, 1, count("user_activated"))

	// Without a key: repeats succeed and change nothing.
	for i := range 3 {
		r := s.Do(t, http.MethodPost, path+"/deactivate", s.AdminToken, nil)
		assert.Equal(t, http.StatusOK, r.Status, "deactivate %d: %s", i, r)
		assert.Equal(t, "inactive", r.JSON(t)["status"])
	}
	assert.Equal(t, 1, count("user_deactivated"), "repeated deactivate")
	for i := range 3 {
		r := s.Do(t, http.MethodPost, path+"/activate", s.AdminToken, nil)
		assert.Equal(t, http.StatusOK, r.Status, "activate %d: %s", i, r)
		assert.Equal(t, "active", r.JSON(t)["status"])
	}
	assert.Equal(t, 2, count("user_activated"), "repeated activate")

	// With one key: the first answer is replayed, byte for byte.
	replay := func(method, p, key string, body any, wantAction string, wantCount int) {
		t.Helper()
		first := s.Do(t, method, p, s.AdminToken, body, "Idempotency-Key", key)
		require.Equal(t, http.StatusOK, first.Status, "%s", first)
		assert.Empty(t, first.Header.Get("Idempotent-Replayed"), "the first answer is not a replay")
		for i := range 3 {
			again := s.Do(t, method, p, s.AdminToken, body, "Idempotency-Key", key)
			assert.Equal(t, first.Status, again.Status, "replay %d", i)
			assert.Equal(t, "true", again.Header.Get("Idempotent-Replayed"), "replay %d", i)
			assert.JSONEq(t, string(first.Body), string(again.Body), "replay %d returns the first body", i)
		}
		assert.Equal(t, wantCount, count(wantAction), "%s with key %s", p, key)
	}
	deactivateKey := "c08-deactivate-" + id
	replay(http.MethodPost, path+"/deactivate", deactivateKey, map[string]any{"reason": "retry"}, "user_deactivated", 2)
	activateKey := "c08-activate-" + id
	replay(http.MethodPost, path+"/activate", activateKey, nil, "user_activated", 3)

	// A key reused for a different request is refused and runs nothing.
	r := s.Do(t, http.MethodPost, path+"/deactivate", s.AdminToken, map[string]any{"reason": "other"}, "Idempotency-Key", deactivateKey)
	assertProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused", "same key, other body")
	r = s.Do(t, http.MethodPost, path+"/deactivate", s.AdminToken, nil, "Idempotency-Key", activateKey)
	assertProblem(t, r, http.StatusUnprocessableEntity, "idempotency_key_reused", "same key, other route")
	assert.Equal(t, 2, count("user_deactivated"), "a refused key reuse appends nothing")
	assert.Equal(t, "active", s.Do(t, http.MethodGet, path, s.AdminToken, nil).JSON(t)["status"])

	// Racing retries, with one key and without any.
	race := func(key string) map[int]int {
		statuses := map[int]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 10 {
			wg.Go(func() {
				<-start
				var h []string
				if key != "" {
					h = []string{"Idempotency-Key", key}
				}
				r, err := s.Try(http.MethodPost, path+"/deactivate", s.AdminToken, nil, h...)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					statuses[-1]++
					return
				}
				statuses[r.Status]++
				if r.Status >= 400 {
					var p struct{ Code string }
					_ = json.Unmarshal(r.Body, &p)
					if r.Status != http.StatusConflict || p.Code != "idempotency_key_in_use" {
						statuses[1000+r.Status]++ // an unexpected refusal
					}
				}
			})
		}
		close(start)
		wg.Wait()
		return statuses
	}
	st := race("c08-race-" + id)
	assert.Positive(t, st[http.StatusOK], "racing retries with one key: %v", st)
	for code := range st {
		assert.Contains(t, []int{http.StatusOK, http.StatusConflict}, code, "racing retries with one key: %v", st)
	}
	assert.Equal(t, 3, count("user_deactivated"), "racing retries with one key")

	r = s.Do(t, http.MethodPost, path+"/activate", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	st = race("")
	assert.Equal(t, map[int]int{http.StatusOK: 10}, st, "racing retries without a key")
	assert.Equal(t, 4, count("user_deactivated"), "racing retries without a key")
	assert.Equal(t, 4, count("user_activated"))
}

// TestC09_ManySessions: deactivating a user with 600 open sessions revokes and
// audits every one at once; an oversized body is refused.
func TestC09_ManySessions(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Many Sessions")

	const n = 600
	tokens := make([]string, n)
	sids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				r, err := s.Try(http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
				if err == nil && r.Status != http.StatusCreated {
					err = fmt.Errorf("login: %s", r)
				}
				if err != nil {
					errs[i] = err
					continue
				}
				var v struct {
					Token     string `json:"token"`
					SessionID string `json:"session_id"`
				}
				errs[i] = json.Unmarshal(r.Body, &v)
				tokens[i], sids[i] = v.Token, v.SessionID
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "login %d", i)
	}
	open := s.pages(t, "/v1/users/"+id+"/sessions", "status=open")
	require.Len(t, open, n, "open sessions before")

	r := s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, map[string]any{"reason": "c09"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)

	answered := position(t, r.JSON(t))

	// Right after the answer: nothing open, every session revoked and audited once.
	open = s.pages(t, "/v1/users/"+id+"/sessions", "status=open")
	revoked := s.Audit(t, "user_id="+id+"&action=session_revoked")
	if !assert.Empty(t, open, "open sessions right after deactivation") {
		// Who revoked what, and where: the answer must cover every revocation.
		t.Logf("%d sessions open right after the answer at position %d; revocations then (actor: count, last position): %v",
			len(open), answered, revocationsByActor(t, revoked))
		require.Eventually(t, func() bool {
			o, err := s.TryPages("/v1/users/"+id+"/sessions", "status=open")
			return err == nil && len(o) == 0
		}, 10*time.Second, 50*time.Millisecond, "the sessions are closed later")
		revoked = s.Audit(t, "user_id="+id+"&action=session_revoked")
		t.Logf("revocations later (actor: count, last position): %v", revocationsByActor(t, revoked))
	}
	assert.Len(t, revoked, n, "session_revoked rows")
	bySession := countBy(revoked, "resource_id")
	for _, sid := range sids {
		assert.Equal(t, 1, bySession[sid], "revocations of session %s", sid)
	}
	all := s.pages(t, "/v1/users/"+id+"/sessions", "")
	assert.Len(t, all, n)
	for _, row := range all {
		assert.Equal(t, "revoked", row["status"], "session %v", row["id"])
	}
	// Every token is refused.
	refused := make([]int, n)
	idx := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range idx {
				r, err := s.Try(http.MethodGet, "/v1/users/"+id, tokens[i], nil)
				if err == nil {
					refused[i] = r.Status
				}
			}
		})
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	for i, st := range refused {
		assert.Equal(t, http.StatusUnauthorized, st, "token %d after deactivation", i)
	}
	assert.Len(t, s.Audit(t, "user_id="+id+"&action=user_deactivated"), 1)

	// A 2 MB field, with and without Content-Length.
	usersBefore := len(s.Audit(t, "action=user_created"))
	big, err := json.Marshal(map[string]any{"email": uniqueEmail(t), "name": strings.Repeat("x", 2<<20)})
	require.NoError(t, err)
	r = s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, big)
	assertProblem(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "2 MB body with Content-Length")
	r = s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, bytes.NewReader(big))
	assertProblem(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "2 MB body, chunked")
	r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, bytes.NewReader(big), "Idempotency-Key", "c09-big")
	assertProblem(t, r, http.StatusRequestEntityTooLarge, "body_too_large", "2 MB body, chunked, with an idempotency key")
	assert.Len(t, s.Audit(t, "action=user_created"), usersBefore, "an oversized request appends nothing")
	assert.Equal(t, http.StatusOK, s.Do(t, http.MethodGet, "/readyz", "", nil).Status, "still ready")
}

// revocationsByActor sums session_revoked rows per actor: count and last position.
func revocationsByActor(t testing.TB, rows []map[string]any) map[string][2]int64 {
	t.Helper()
	out := map[string][2]int64{}
	for _, row := range rows {
		a, _ := row["actor_id"].(string)
		c := out[a]
		c[0]++
		c[1] = max(c[1], position(t, row))
		out[a] = c
	}
	return out
}

// The read-only tools pointed at a directory without a store say so, and
// leave no empty store behind them to be mistaken for the real one.
func TestReadToolsNeedAnExistingStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{{"stream", "user-" + uuid.NewString()}, {"state", uuid.NewString()}} {
		cmd := exec.Command(binPath, append(args, "--data-dir", dir)...)
		out, err := cmd.CombinedOutput()
		require.Error(t, err, "%v: %s", args, out)
		assert.Contains(t, string(out), "no embedded store at", args)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing created")
}

// The bootstrap admin's address, registered by someone else before the
// operator set it, is not taken for a bootstrap cut short: the stranger's
// pending account stays pending (no login with their password), and the
// log says no admin was made.
func TestBootstrapAdminAddressTakenByAStranger(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	squat := uniqueEmail(t)
	r := s.Do(t, http.MethodPost, "/v1/users", "", map[string]any{"email": squat, "name": "Squatter", "password": "squatter-pass-1"})
	require.Equal(t, http.StatusCreated, r.Status, "%s", r)
	id, _ := r.JSON(t)["id"].(string)

	s.env = append(s.env, "EVIDENT_BOOTSTRAP_ADMIN_EMAIL="+squat, "EVIDENT_BOOTSTRAP_ADMIN_PASSWORD=operator-pass-1")
	s.Restart(t)
	u := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, u.Status, "%s", u)
	assert.Equal(t, "pending", u.JSON(t)["status"], "not activated by the bootstrap")
	assert.Equal(t, []any{"member"}, u.JSON(t)["roles"])
	for _, pw := range []string{"squatter-pass-1", "operator-pass-1"} {
		r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": squat, "password": pw})
		assert.NotEqual(t, http.StatusCreated, r.Status, "login with %s: %s", pw, r)
	}
	log, err := os.ReadFile(s.logPath)
	require.NoError(t, err)
	assert.Contains(t, string(log), "bootstrap admin not made")
}

// If-Match compares strongly (RFC 9110 §13.1.1): the weak form of the very
// ETag the API sent does not match, and nothing is written.
func TestWeakIfMatchDoesNotMatch(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id := s.RegisterUser(t, uniqueEmail(t), "Weak")
	r := s.Do(t, http.MethodGet, "/v1/users/"+id+"/state", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	before := userVersion(t, s, id)
	tag := fmt.Sprintf(`"%d"`, int64(before))
	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"name": "Weakened"}, "If-Match", "W/"+tag)
	assertProblem(t, r, http.StatusPreconditionFailed, "precondition_failed", "weak tag")
	assert.Equal(t, before, userVersion(t, s, id), "nothing written")
	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"name": "Strong"}, "If-Match", tag)
	assert.Equal(t, http.StatusOK, r.Status, "the strong tag matches: %s", r)
}
