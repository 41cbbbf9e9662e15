package tests

import (
	"bytes"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// userVersion is the version of a user's stream as the write side folds it
// (GET /v1/users/{id}/state), which no read model's lag can hide.
func userVersion(t *testing.T, s *Server, id string) float64 {
	t.Helper()
	r := s.Do(t, http.MethodGet, "/v1/users/"+id+"/state", s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "state of %s: %s", id, r)
	v, ok := r.JSON(t)["version"].(float64)
	require.True(t, ok, "state of %s: %s", id, r)
	return v
}

// assertCurrentPasswordProblem checks a refusal of a self change and that it
// names the field to fix.
func assertCurrentPasswordProblem(t *testing.T, r *Response, status int, code, what string) {
	t.Helper()
	if assertProblem(t, r, status, code, what) {
		assert.Equal(t, "current_password", r.JSON(t)["field"], what)
	}
}

// A member with a stolen or left-open session token cannot take the account
// over: changing its own e-mail or password needs the current password,
// and a refusal stores nothing.
func TestSelfChangeOfCredentialsNeedsCurrentPassword(t *testing.T) {
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Self")
	tok, _ := s.Login(t, email, userPassword)
	path := "/v1/users/" + id
	const newPassword, wrong = "self-new-password-2", "wrong-current-password-9"
	newEmail := uniqueEmail(t)
	before := userVersion(t, s, id)
	eventsBefore := len(s.UserEvents(t, id))

	refused := []struct {
		what   string
		body   map[string]any
		status int
		code   string
	}{
		{"password without current_password", map[string]any{"password": newPassword}, http.StatusUnprocessableEntity, "current_password_required"},
		{"password with an empty current_password", map[string]any{"password": newPassword, "current_password": ""}, http.StatusUnprocessableEntity, "current_password_required"},
		{"password with a null current_password", map[string]any{"password": newPassword, "current_password": nil}, http.StatusUnprocessableEntity, "current_password_required"},
		{"password with a wrong current_password", map[string]any{"password": newPassword, "current_password": wrong}, http.StatusForbidden, "invalid_current_password"},
		{"e-mail without current_password", map[string]any{"email": newEmail}, http.StatusUnprocessableEntity, "current_password_required"},
		{"e-mail with a wrong current_password", map[string]any{"email": newEmail, "current_password": wrong}, http.StatusForbidden, "invalid_current_password"},
		{"e-mail and name without current_password", map[string]any{"email": newEmail, "name": "Mallory"}, http.StatusUnprocessableEntity, "current_password_required"},
		{"name with a wrong current_password", map[string]any{"name": "Mallory", "current_password": wrong}, http.StatusForbidden, "invalid_current_password"},
	}
	for _, c := range refused {
		assertCurrentPasswordProblem(t, s.Do(t, http.MethodPatch, path, tok, c.body), c.status, c.code, c.what)
	}
	assert.Equal(t, before, userVersion(t, s, id), "a refused change was appended to the user's stream")
	r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": newPassword})
	assertProblem(t, r, http.StatusUnauthorized, "invalid_credentials", "the refused password")
	r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": newEmail, "password": userPassword})
	assertProblem(t, r, http.StatusUnauthorized, "invalid_credentials", "the refused address")
	r = s.Do(t, http.MethodGet, path, tok, nil)
	require.Equal(t, http.StatusOK, r.Status, "the session survives a refusal: %s", r)
	assert.Equal(t, "Self", r.JSON(t)["name"])

	// A name, or the address the member has already, needs no proof.
	r = s.Do(t, http.MethodPatch, path, tok, map[string]any{"name": "Self renamed", "email": " " + email + " "})
	require.Equal(t, http.StatusOK, r.Status, "rename: %s", r)
	assert.Equal(t, "Self renamed", r.JSON(t)["name"])
	assert.Equal(t, before+1, userVersion(t, s, id))

	// With the right current password, both go through.
	r = s.Do(t, http.MethodPatch, path, tok, map[string]any{"password": newPassword, "current_password": userPassword})
	require.Equal(t, http.StatusOK, r.Status, "password change: %s", r)
	r = s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": userPassword})
	assertProblem(t, r, http.StatusUnauthorized, "invalid_credentials", "the old password after the change")
	r = s.Do(t, http.MethodPatch, path, tok, map[string]any{"email": newEmail, "current_password": newPassword})
	require.Equal(t, http.StatusOK, r.Status, "e-mail change: %s", r)
	assert.Equal(t, newEmail, r.JSON(t)["email"])
	assert.Equal(t, before+3, userVersion(t, s, id))

	// The user's log holds the three changes and nothing of the refusals.
	events := s.UserEvents(t, id)
	require.Len(t, events, eventsBefore+3, "events of the user: %v", actions(events))
	assert.Equal(t, []string{"user_updated", "user_updated", "user_updated"}, actions(events[eventsBefore:]))
	s.Login(t, newEmail, newPassword)
}

// An admin changing another user's e-mail or password needs no current
// password; changing their own, an admin needs it like anyone.
func TestAdminChangesNeedCurrentPasswordOnlyForThemselves(t *testing.T) {
	s := startServer(t)
	id, _ := s.NewActiveUser(t, "Member")
	otherEmail := uniqueEmail(t)
	r := s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"email": otherEmail, "password": "reset-by-admin-1"})
	require.Equal(t, http.StatusOK, r.Status, "admin resets a member: %s", r)
	s.Login(t, otherEmail, "reset-by-admin-1")

	self := "/v1/users/" + s.AdminID
	before := userVersion(t, s, s.AdminID)
	r = s.Do(t, http.MethodPatch, self, s.AdminToken, map[string]any{"password": "admin-password-2"})
	assertCurrentPasswordProblem(t, r, http.StatusUnprocessableEntity, "current_password_required", "admin's own password")
	r = s.Do(t, http.MethodPatch, self, s.AdminToken, map[string]any{"email": uniqueEmail(t), "current_password": "not-the-admin-password"})
	assertCurrentPasswordProblem(t, r, http.StatusForbidden, "invalid_current_password", "admin's own e-mail")
	assert.Equal(t, before, userVersion(t, s, s.AdminID))
	r = s.Do(t, http.MethodPatch, self, s.AdminToken, map[string]any{"password": "admin-password-2", "current_password": adminPassword})
	require.Equal(t, http.StatusOK, r.Status, "admin's own password with proof: %s", r)
	s.Login(t, adminEmail, "admin-password-2")
}

// The current password is a secret like the password: it is kept nowhere,
// and a keyed request refused for a wrong one is not replayed to the retry
// that corrects it (the key's fingerprint cannot tell the two apart).
func TestCurrentPasswordIsKeptNowhere(t *testing.T) {
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Keyed")
	tok, _ := s.Login(t, email, userPassword)
	const wrong, newPassword = "typo-in-the-current-pw-7", "keyed-new-password-3"
	key := []string{"Idempotency-Key", "self-change-" + id}
	r := s.Do(t, http.MethodPatch, "/v1/users/"+id, tok, map[string]any{"password": newPassword, "current_password": wrong}, key...)
	assertCurrentPasswordProblem(t, r, http.StatusForbidden, "invalid_current_password", "keyed, wrong")
	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, tok, map[string]any{"password": newPassword, "current_password": userPassword}, key...)
	require.Equal(t, http.StatusOK, r.Status, "keyed retry with the right current password: %s", r)
	assert.Empty(t, r.Header.Get("Idempotent-Replayed"))
	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, tok, map[string]any{"password": newPassword, "current_password": userPassword}, key...)
	require.Equal(t, http.StatusOK, r.Status, "keyed retry of the success: %s", r)
	assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"))
	s.Login(t, email, newPassword)

	if onPostgres() {
		return // the files below are the embedded store's
	}
	s.Stop() // every write on disk, WAL included, and the log closed
	files := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(s.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = b
		return err
	}))
	log, err := os.ReadFile(s.logPath)
	require.NoError(t, err)
	files[s.logPath] = log
	require.NotEmpty(t, files)
	for p, b := range files {
		for _, secret := range []string{wrong, userPassword, newPassword} {
			assert.False(t, bytes.Contains(b, []byte(secret)), "%s holds %q", p, secret)
		}
	}
}

// A new password ends the user's other sessions: a self change keeps the
// session it came with, an admin's change ends them all. Each is one
// session_revoked with reason password_changed in the audit.
func TestNewPasswordEndsOtherSessions(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	id, email := s.NewActiveUser(t, "Rotating")
	here, _ := s.Login(t, email, userPassword)
	there, thereID := s.Login(t, email, userPassword)

	r := s.Do(t, http.MethodPatch, "/v1/users/"+id, here, map[string]any{"password": "rotated-password-2", "current_password": userPassword})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, http.StatusUnauthorized, s.Do(t, http.MethodGet, "/v1/users/"+id, there, nil).Status, "the other session is ended")
	assert.Equal(t, http.StatusOK, s.Do(t, http.MethodGet, "/v1/users/"+id, here, nil).Status, "the session it came with is kept")
	revoked := s.Audit(t, "user_id="+id+"&action=session_revoked")
	require.Len(t, revoked, 1)
	assert.Equal(t, thereID, revoked[0]["resource_id"])
	assert.Contains(t, string(mustJSON(t, revoked[0]["details"])), "password_changed")

	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"name": "Renamed only"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, http.StatusOK, s.Do(t, http.MethodGet, "/v1/users/"+id, here, nil).Status, "a rename ends nothing")

	r = s.Do(t, http.MethodPatch, "/v1/users/"+id, s.AdminToken, map[string]any{"password": "reset-by-admin-3"})
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, http.StatusUnauthorized, s.Do(t, http.MethodGet, "/v1/users/"+id, here, nil).Status, "an admin's reset ends every session")
	assert.Len(t, s.Audit(t, "user_id="+id+"&action=session_revoked"), 2)

}
