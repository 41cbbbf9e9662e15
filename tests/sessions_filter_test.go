package tests

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSessionsFilterByStatus: a user's sessions list filters by each status
// the README names, as the sessions read now.
func TestSessionsFilterByStatus(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Filter")
	tok1, sid1 := s.Login(t, email, userPassword)
	_, sid2 := s.Login(t, email, userPassword)
	r := s.Do(t, http.MethodDelete, "/v1/sessions/current", tok1, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)

	list := func(status string) []any {
		rows := c1xItems(t, s.Do(t, http.MethodGet, "/v1/users/"+id+"/sessions?status="+status, s.AdminToken, nil))
		var ids []any
		for _, row := range rows {
			assert.Equal(t, status, row["status"])
			ids = append(ids, row["id"])
		}
		return ids
	}
	assert.Equal(t, []any{sid2}, list("open"))
	assert.Equal(t, []any{sid1}, list("logged_out"))
	assert.Empty(t, list("revoked"))
	assert.Empty(t, list("expired"))

	r = s.Do(t, http.MethodPost, "/v1/users/"+id+"/deactivate", s.AdminToken, map[string]any{"reason": "filter"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Empty(t, list("open"))
	assert.Equal(t, []any{sid2}, list("revoked"))
	assert.Equal(t, []any{sid1}, list("logged_out"))
}
