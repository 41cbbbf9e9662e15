package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFlowSurvivesKill walks the activation flow end to end, then kills the
// server in the middle of a write load and checks that everything it
// acknowledged survived, once, and that the read models converge.
func TestFlowSurvivesKill(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	// register → request activation → activate → log in → deactivate.
	email := uniqueEmail(t)
	id := s.RegisterUser(t, email, "Flow User")
	tok := s.RequestActivation(t, id)
	r := s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": userPassword})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "active", r.JSON(t)["status"])
	userTok, sid := s.Login(t, email, userPassword)
	r = s.Do(t, http.MethodGet, "/v1/users/"+id, userTok, nil)
	require.Equal(t, http.StatusOK, r.Status, "a member reads itself: %s", r)
	assert.Equal(t, "active", r.JSON(t)["status"])

	r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, map[string]any{"reason": "flow test"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "inactive", r.JSON(t)["status"])
	r = s.Do(t, http.MethodGet, "/v1/users/"+id, userTok, nil)
	assertProblem(t, r, http.StatusUnauthorized, "unauthenticated", "old token after deactivation")
	r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
	assert.Equal(t, http.StatusUnauthorized, r.Status, "login of an inactive user: %s", r)

	rows := s.Audit(t, "user_id="+id)
	assert.Equal(t, []string{"user_created", "user_activation_requested", "user_activated",
		"user_logged_in", "user_deactivated", "session_revoked"}, actions(rows))
	assertAscendingPositions(t, rows)
	if len(rows) == 6 {
		assert.Equal(t, sid, rows[3]["resource_id"], "login row names the session")
		assert.Equal(t, sid, rows[5]["resource_id"], "revocation row names the session")
		assert.Equal(t, s.AdminID, rows[4]["actor_id"], "the admin deactivated")
		assert.NotContains(t, string(mustJSON(t, rows)), tok, "the raw activation token is never in the audit")
		assert.NotContains(t, string(mustJSON(t, rows)), userTok, "the raw session token is never in the audit")
	}

	// The replay tool folds the user now and as it was when it logged in.
	out, err := s.CLI(t, "state", id)
	require.NoError(t, err)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &st), "state output %q", out)
	assert.Equal(t, "inactive", st["status"])
	assert.Equal(t, email, st["email"])
	if len(rows) == 6 {
		at, _ := rows[3]["occurred_at"].(string)
		out, err = s.CLI(t, "state", "user-"+id, "--at", at)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &st), "state output %q", out)
		assert.Equal(t, "active", st["status"], "state at the login")
	}

	// A concurrent write load, killed in the middle.
	var (
		mu    sync.Mutex
		acked []string
		other = map[int]int{}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := map[string]any{
					"email": fmt.Sprintf("load-%d-%d-%d@example.test", time.Now().UnixNano(), w, i),
					"name":  strings.Repeat("n", 1+(i*37)%200),
				}
				r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, body)
				if err != nil {
					continue // cut off by the kill: outcome unknown
				}
				mu.Lock()
				if r.Status == http.StatusCreated {
					var v struct{ ID string }
					if json.Unmarshal(r.Body, &v) == nil && v.ID != "" {
						acked = append(acked, v.ID)
					}
				} else {
					other[r.Status]++
				}
				mu.Unlock()
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 40
	}, 20*time.Second, 10*time.Millisecond, "the load made no progress")
	time.Sleep(300 * time.Millisecond) // let the load run on into the kill
	s.Kill()
	close(stop)
	wg.Wait()
	mu.Lock()
	t.Logf("acknowledged %d registrations before the kill; other answers %v", len(acked), other)
	for status := range other {
		assert.Less(t, status, 500, "no 5xx under load: %v", other)
	}
	mu.Unlock()

	s.Restart(t)

	// Every acknowledged registration is readable and audited exactly once,
	// and the users table converges on the audit trail.
	var created map[string]int
	var users []map[string]any
	require.Eventually(t, func() bool {
		rows, err := s.TryPages("/v1/audit", "action=user_created")
		if err != nil {
			return false
		}
		created = countBy(rows, "user_id")
		users, err = s.TryPages("/v1/users", "")
		return err == nil && len(users) == len(created)
	}, 15*time.Second, 100*time.Millisecond, "users and user_created rows do not converge")
	for id, n := range created {
		assert.Equal(t, 1, n, "user_created rows of %s", id)
	}
	assert.Len(t, users, len(created))
	for _, id := range acked {
		assert.Equal(t, 1, created[id], "acknowledged user %s has one user_created row", id)
		r := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
		assert.Equal(t, http.StatusOK, r.Status, "acknowledged user %s: %s", id, r)
	}
	assertUniqueEventIDs(t, s.Audit(t, ""))

	// The replay tool sees the first and the last acknowledged user's event.
	for _, id := range []string{acked[0], acked[len(acked)-1]} {
		out, err := s.CLI(t, "stream", "user-"+id)
		require.NoError(t, err)
		lines := streamLines(t, out)
		require.NotEmpty(t, lines, "stream user-%s", id)
		assert.Equal(t, "user.created", lines[0]["type"], "stream user-%s", id)
		audit := s.UserEvents(t, id)
		require.Len(t, audit, 1, "events of %s", id)
		assert.Equal(t, audit[0]["event_id"], lines[0]["event_id"], "stream and audit name the same event")
		assert.Equal(t, audit[0]["position"], lines[0]["position"], "stream and audit agree on the position")
	}
}

// streamLines parses `evident stream` output: one JSON object per line.
func streamLines(t testing.TB, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "stream line %q", sc.Text())
		lines = append(lines, m)
	}
	require.NoError(t, sc.Err())
	return lines
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// position reads a row's position as a number in log order: on SQLite the
// position "N" is N; on PostgreSQL the position "T/S" (transaction id, then
// sequence number) is T<<32 | S, which orders as the log does.
func position(t testing.TB, row map[string]any) int64 {
	t.Helper()
	s, _ := row["position"].(string)
	c, p, pair := strings.Cut(s, "/")
	n, err := strconv.ParseInt(c, 10, 64)
	require.NoError(t, err, "position %q of %v", s, row)
	if !pair {
		return n
	}
	seq, err := strconv.ParseInt(p, 10, 64)
	require.NoError(t, err, "position %q of %v", s, row)
	require.True(t, n < 1<<31 && seq < 1<<32, "position %q of %v is too large to order as one number", s, row)
	return n<<32 | seq
}

// positionSeq is a row's sequence number: the N of "N" and the S of "T/S", 1
// for the first event of a SQL store.
func positionSeq(t testing.TB, row map[string]any) int64 {
	t.Helper()
	s, _ := row["position"].(string)
	if _, p, pair := strings.Cut(s, "/"); pair {
		s = p
	}
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err, "position %q of %v", row["position"], row)
	return n
}

// assertAscendingPositions checks that rows are in strict log order.
func assertAscendingPositions(t testing.TB, rows []map[string]any) {
	t.Helper()
	for i := 1; i < len(rows); i++ {
		if !assert.Less(t, position(t, rows[i-1]), position(t, rows[i]), "rows %d and %d out of log order", i-1, i) {
			return
		}
	}
}

// assertUniqueEventIDs checks that no event appears twice in the audit.
func assertUniqueEventIDs(t testing.TB, rows []map[string]any) {
	t.Helper()
	for id, n := range countBy(rows, "event_id") {
		assert.Equal(t, 1, n, "audit rows of event %s", id)
	}
	assertAscendingPositions(t, rows)
}
