package api

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"evident/readmodels"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func fingerprintOf(t *testing.T, method, path, body string) string {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	fp, _, err := requestFingerprint(r, []byte(body), "")
	require.NoError(t, err, body)
	return fp
}

// The fingerprint (kept, and the seed of a registration's user id, which
// the log keeps) holds no fast hash of a secret: bodies that differ only
// in a password, under any spelling of the key encoding/json
// accepts, have one fingerprint; any other difference tells them apart.
func TestFingerprintLeavesSecretsOut(t *testing.T) {
	base := fingerprintOf(t, "POST", "/v1/users", `{"email":"a@b.co","name":"A","password":"correct horse"}`)
	for _, body := range []string{
		`{"email":"a@b.co","name":"A","password":"another one"}`,
		`{"email":"a@b.co","name":"A","PassWord":"correct horse"}`,
		` { "name" : "A", "password":"x",  "email":"a@b.co" } `,
	} {
		assert.Equal(t, base, fingerprintOf(t, "POST", "/v1/users", body), body)
	}
	for _, body := range []string{
		`{"email":"b@b.co","name":"A","password":"correct horse"}`,
		`{"email":"a@b.co","name":"A"}`,
		`{"email":"a@b.co","name":"A","password":null}`,
	} {
		assert.NotEqual(t, base, fingerprintOf(t, "POST", "/v1/users", body), body)
	}
	assert.NotEqual(t, base, fingerprintOf(t, "PATCH", "/v1/users", `{"email":"a@b.co","name":"A","password":"correct horse"}`))

	raw := `POST /v1/users` + "\n" + `{"email":"a@b.co","name":"A","password":"correct horse"}`
	sum := sha256.Sum256([]byte(raw))
	assert.NotEqual(t, hex.EncodeToString(sum[:]), base, "a plain hash of the body with its password")

	// A self change's proof is as secret as the password it changes.
	patch := fingerprintOf(t, "PATCH", "/v1/users/x", `{"password":"new password 1","current_password":"old password 1"}`)
	for _, body := range []string{
		`{"password":"new password 1","current_password":"a typo in it"}`,
		`{"password":"another new one","Current_Password":"old password 1"}`,
		`{"CURRENT_PASSWORD":"x","password":"y"}`,
	} {
		assert.Equal(t, patch, fingerprintOf(t, "PATCH", "/v1/users/x", body), body)
	}
	assert.NotEqual(t, patch, fingerprintOf(t, "PATCH", "/v1/users/x", `{"password":"new password 1"}`))
	assert.NotEqual(t, patch, fingerprintOf(t, "PATCH", "/v1/users/x", `{"password":"new password 1","current_password":null}`))
	raw = `PATCH /v1/users/x` + "\n" + `{"current_password":"old password 1","password":"secret"}`
	sum = sha256.Sum256([]byte(raw))
	assert.NotEqual(t, hex.EncodeToString(sum[:]), patch, "a plain hash of the body with its current password")

	// A token is taken as its SHA-256 (it is 256 random bits, kept hashed
	// anyway): a request with another token is another request, so it is
	// never answered with what the first token gave.
	tok := fingerprintOf(t, "POST", "/v1/activations", `{"token":"act_abc","password":"p1"}`)
	assert.Equal(t, tok, fingerprintOf(t, "POST", "/v1/activations", `{"Token":"act_abc","password":"p2"}`))
	assert.NotEqual(t, tok, fingerprintOf(t, "POST", "/v1/activations", `{"token":"act_xyz","password":"p1"}`))
	raw = `POST /v1/activations` + "\n" + `{"password":"secret","token":"act_abc"}`
	sum = sha256.Sum256([]byte(raw))
	assert.NotEqual(t, hex.EncodeToString(sum[:]), tok)
	assert.Equal(t, fingerprintOf(t, "POST", "/x", ""), fingerprintOf(t, "POST", "/x", "  \n"))
}

// A logout names the caller's own session: from two sessions it is two
// requests, and the second is not answered with the first's logout.
func TestFingerprintOfOwnSessionPathNamesTheSession(t *testing.T) {
	of := func(path, session string) string {
		r := httptest.NewRequest("DELETE", path, nil)
		fp, _, err := requestFingerprint(r, nil, session)
		require.NoError(t, err)
		return fp
	}
	assert.NotEqual(t, of("/v1/sessions/current", "s1"), of("/v1/sessions/current", "s2"))
	assert.Equal(t, of("/v1/sessions/current", "s1"), of("/v1/sessions/current", "s1"))
	assert.Equal(t, of("/v1/sessions/s1", "s2"), of("/v1/sessions/s1", "s3"), "an explicit id is the id")
}

// A secret field is known by a secret word anywhere in its name, in any
// case: a current_password or refresh_token added one day is masked too,
// and fields that are no secret are not.
func TestFingerprintMasksFieldsNamedLikeSecrets(t *testing.T) {
	for _, field := range []string{"current_password", "CurrentPassword", "new_PASSWORD", "oldpassword",
		"current_paſſword", "refresh_token", "activationToken", "TOKEN_ID", "client_secret"} {
		t.Run(field, func(t *testing.T) {
			assert.True(t, secretField(field))
			a := fingerprintOf(t, "PATCH", "/v1/users/x", `{"name":"A","`+field+`":"first secret"}`)
			b := fingerprintOf(t, "PATCH", "/v1/users/x", `{"name":"A","`+field+`":"second secret"}`)
			if holdsWord(field, "token") {
				assert.NotEqual(t, a, b, "%s is taken as its hash", field)
			} else {
				assert.Equal(t, a, b, "the value of %s is left out", field)
			}
			assert.NotEqual(t, a, fingerprintOf(t, "PATCH", "/v1/users/x", `{"name":"A","`+field+`":null}`), "absent and set differ")
		})
	}
	for _, field := range []string{"email", "name", "roles", "reason", "pass", "word", "tok", "passwor"} {
		assert.False(t, secretField(field), field)
		assert.NotEqual(t,
			fingerprintOf(t, "PATCH", "/v1/users/x", `{"`+field+`":"one"}`),
			fingerprintOf(t, "PATCH", "/v1/users/x", `{"`+field+`":"two"}`), field)
	}
	// Two spellings of one field are refused before anything is kept: the
	// decoder would let the last win, whatever the fingerprint read.
	for _, body := range []string{`{"password":"a","PASSWORD":null,"Password":"b"}`, `{"name":"Alice","NAME":"Bob"}`, `{"email":"a@b.co","email":"c@d.co"}`} {
		r := httptest.NewRequest("POST", "/v1/users", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		_, _, err := requestFingerprint(r, []byte(body), "")
		var p *Problem
		require.ErrorAs(t, err, &p, body)
		assert.Equal(t, "duplicate_field", p.Code, body)
	}
}

// A row kept before headers were (nil Header) still replays, with the
// content type its status implies.
func TestReplayOfAnswerKeptWithoutHeaders(t *testing.T) {
	e := echo.New()
	for status, ct := range map[int]string{200: "application/json", 201: "application/json", 422: "application/problem+json"} {
		rec := httptest.NewRecorder()
		c := e.NewContext(httptest.NewRequest(http.MethodPost, "/v1/users", nil), rec)
		require.NoError(t, replay(c, &readmodels.IdempotentResponse{Status: status, Body: []byte(`{"a":1}`), Done: true}))
		assert.Equal(t, status, rec.Code)
		assert.Equal(t, ct, rec.Header().Get("Content-Type"), "status %d", status)
		assert.Equal(t, "true", rec.Header().Get("Idempotent-Replayed"))
		assert.Empty(t, rec.Header().Get("ETag"))
		assert.JSONEq(t, `{"a":1}`, rec.Body.String())
	}
	// Only the answer's own headers come back, whatever a row holds.
	rec := httptest.NewRecorder()
	c := e.NewContext(httptest.NewRequest(http.MethodPost, "/v1/users", nil), rec)
	require.NoError(t, replay(c, &readmodels.IdempotentResponse{Status: 201, Body: []byte(`{}`), Done: true,
		Header: map[string]string{"ETag": `"1"`, "Location": "/v1/users/x", "Content-Type": "application/json", "X-Request-Id": "old"}}))
	assert.Equal(t, `"1"`, rec.Header().Get("ETag"))
	assert.Equal(t, "/v1/users/x", rec.Header().Get("Location"))
	assert.Empty(t, rec.Header().Get("X-Request-Id"))
}

// An answer is kept without its secrets, by the rule of the fingerprint.
func TestRedactDropsSecretFields(t *testing.T) {
	assert.JSONEq(t, `{"session_id":"s","expires_at":"e"}`,
		string(redact([]byte(`{"token":"evs_x","session_id":"s","expires_at":"e","refresh_token":"r"}`))))
	same := `{"id":"x", "name":"A"}`
	assert.Equal(t, same, string(redact([]byte(same))), "a body without secrets is kept as it is")
	assert.Equal(t, "not json", string(redact([]byte("not json"))))
}

// A keyed body that is not one JSON object is refused before anything of
// it is kept, with the problem the command would have given.
func TestFingerprintRefusesWhatCannotBeDecoded(t *testing.T) {
	for body, code := range map[string]string{
		`{"password":"secret"`: "malformed_json",
		`[1]`:                  "invalid_type",
		`{} {}`:                "malformed_json",
	} {
		r := httptest.NewRequest("POST", "/v1/users", strings.NewReader(body))
		_, _, err := requestFingerprint(r, []byte(body), "")
		var p *Problem
		require.ErrorAs(t, err, &p, body)
		assert.Equal(t, code, p.Code, body)
		assert.Equal(t, http.StatusBadRequest, p.Status, body)
	}
	r := httptest.NewRequest("POST", "/v1/users", strings.NewReader(`{}`))
	r.Header.Set("Content-Type", "text/plain")
	_, _, err := requestFingerprint(r, []byte(`{}`), "")
	var p *Problem
	require.ErrorAs(t, err, &p)
	assert.Equal(t, "unsupported_media_type", p.Code)
}
