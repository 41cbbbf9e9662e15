package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/sqlitedb"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPoisonEventIsParkedRetriedAndSkipped writes an event no projection can
// read straight into the running server's log, then drives the operator's
// side over HTTP: the event is parked, later events are still projected,
// a retry fails and keeps it parked, a skip clears it.
func TestPoisonEventIsParkedRetriedAndSkipped(t *testing.T) {
	skipOnPostgres(t, "writes the poison event into the embedded store's file")
	t.Parallel()
	s := startServer(t, WithEnv("EVIDENT_MAX_RETRIES=2", "EVIDENT_RETRY_DELAY=5ms"))

	db, err := sqlitedb.Open(filepath.Join(s.DataDir, "evident.db"))
	require.NoError(t, err)
	defer db.Close()
	store, err := sqlite.New(db)
	require.NoError(t, err)
	poisonID := uuid.New()
	md, _ := json.Marshal(map[string]any{"event_id": poisonID, "occurred_at": time.Now().UTC(), "actor_id": "test", "schema_version": 1})
	_, err = store.Append(context.Background(), eventstore.AppendRequest{
		Stream: "user-" + uuid.NewString(), Expected: eventstore.NoStream,
		Events: []eventstore.EventData{{ID: poisonID, Type: "user.created", Data: json.RawMessage(`{"user_id": 42}`), Metadata: md}},
	})
	require.NoError(t, err)

	var parked []map[string]any
	require.Eventually(t, func() bool {
		r := s.Do(t, http.MethodGet, "/v1/workflows/parked", s.AdminToken, nil)
		var body struct {
			Items []map[string]any `json:"items"`
		}
		r.Decode(t, &body)
		parked = body.Items
		return len(parked) >= 2
	}, 15*time.Second, 50*time.Millisecond, "the users and audit projections park it")
	workers := map[string]bool{}
	for _, p := range parked {
		assert.Equal(t, poisonID.String(), p["event_id"])
		assert.Equal(t, "user.created", p["event_type"])
		assert.NotEmpty(t, p["error"])
		workers[p["projection"].(string)] = true
	}
	assert.True(t, workers["users"] && workers["audit"], "parked by %v", workers)

	// Later events are not held back, and the service stays ready.
	id := s.RegisterUser(t, uniqueEmail(t), "After Poison")
	assert.Equal(t, 200, s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil).Status)
	assert.Equal(t, 200, s.Do(t, http.MethodGet, "/readyz", "", nil).Status)
	status := s.Do(t, http.MethodGet, "/v1/workflows/status", s.AdminToken, nil)
	assert.Contains(t, string(status.Body), `"parked":1`)

	retry := s.Do(t, http.MethodPost, "/v1/workflows/parked/audit/"+poisonID.String()+"/retry", s.AdminToken, nil)
	requireProblem(t, retry, http.StatusConflict, "still_failing")
	member := s.Do(t, http.MethodPost, "/v1/workflows/parked/audit/"+poisonID.String()+"/skip", "", nil)
	requireProblem(t, member, http.StatusUnauthorized, "unauthenticated")
	for w := range workers {
		r := s.Do(t, http.MethodPost, "/v1/workflows/parked/"+w+"/"+poisonID.String()+"/skip", s.AdminToken, nil)
		require.Equal(t, http.StatusOK, r.Status, r.String())
	}
	again := s.Do(t, http.MethodPost, "/v1/workflows/parked/audit/"+poisonID.String()+"/skip", s.AdminToken, nil)
	requireProblem(t, again, http.StatusNotFound, "not_found")
	unknown := s.Do(t, http.MethodPost, "/v1/workflows/parked/nonesuch/"+poisonID.String()+"/skip", s.AdminToken, nil)
	requireProblem(t, unknown, http.StatusNotFound, "worker_not_found")
	r := s.Do(t, http.MethodGet, "/v1/workflows/parked", s.AdminToken, nil)
	assert.JSONEq(t, `{"items":[]}`, string(r.Body))
}

// TestAutoActivation: with auto-activation on, the workflow activates every
// new user with method auto, once, and the user can log in.
func TestAutoActivation(t *testing.T) {
	t.Parallel()
	s := startServer(t, WithEnv("EVIDENT_ENABLE_AUTO_ACTIVATION=true"))
	email := uniqueEmail(t)
	r := s.Do(t, http.MethodPost, "/v1/users", "", map[string]any{"email": email, "name": "Auto", "password": "auto-password-1"})
	require.Equal(t, http.StatusCreated, r.Status, r.String())
	id, _ := r.JSON(t)["id"].(string)
	require.Eventually(t, func() bool {
		u := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
		return u.Status == http.StatusOK && u.JSON(t)["status"] == "active"
	}, 10*time.Second, 20*time.Millisecond)
	token, _ := s.Login(t, email, "auto-password-1")
	assert.NotEmpty(t, token)
	rows := s.UserEvents(t, id)
	activated := 0
	for _, row := range rows {
		if row["action"] == "user_activated" {
			activated++
			details, _ := row["details"].(map[string]any)
			assert.Equal(t, "auto", details["method"])
			assert.Equal(t, "system", row["actor_id"])
		}
	}
	assert.Equal(t, 1, activated)
}

// TestQueryFiltersRefuseControlBytes: a NUL or invalid UTF-8 in a filter is
// the client's mistake on every store (PostgreSQL would refuse it with an
// error of its own), and an instant before 1970 cannot sneak in as "no bound".
func TestQueryFiltersRefuseControlBytes(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, path := range []string{
		"/v1/audit?actor_id=%00", "/v1/audit?actor_id=%ff", "/v1/users?email=%00",
		"/v1/audit?to=0001-01-01T00:00:00Z", "/v1/audit?from=1969-12-31T23:59:59Z",
	} {
		r := s.Do(t, http.MethodGet, path, s.AdminToken, nil)
		assertProblem(t, r, http.StatusBadRequest, "invalid_parameter", path)
	}
	id := s.RegisterUser(t, uniqueEmail(t), "Self")
	r := s.Do(t, http.MethodGet, "/v1/users/"+id+"/state?at=0001-01-01T00:00:00Z", s.AdminToken, nil)
	assertProblem(t, r, http.StatusBadRequest, "invalid_parameter")
}

// TestSelfInAnySpelling: a member reaches its own profile whatever case its
// id is written in.
func TestSelfInAnySpelling(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Upper")
	token, _ := s.Login(t, email, userPassword)
	r := s.Do(t, http.MethodGet, "/v1/users/"+strings.ToUpper(id), token, nil)
	assert.Equal(t, http.StatusOK, r.Status, r.String())
}
