package api

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeJSONProblems(t *testing.T) {
	cases := []struct {
		name, body, code string
	}{
		{"syntax", `{"email":`, "malformed_json"},
		{"not json", `hello`, "malformed_json"},
		{"trailing data", `{"email":"a@b.co"} {}`, "malformed_json"},
		{"unknown field", `{"emial":"a@b.co"}`, "unknown_field"},
		{"wrong type", `{"email":42}`, "invalid_type"},
		{"array body", `[1,2]`, "invalid_type"},
		{"roles wrong type", `{"roles":"admin"}`, "invalid_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var req registerRequest
			err := decodeJSON([]byte(tc.body), &req)
			require.Error(t, err)
			p := toProblem(err)
			assert.Equal(t, http.StatusBadRequest, p.Status)
			assert.Equal(t, tc.code, p.Code)
		})
	}
}

func TestDecodeJSONAcceptsOneObject(t *testing.T) {
	var req registerRequest
	require.NoError(t, decodeJSON([]byte(` {"email":"a@b.co","name":"A","roles":["member"]} `), &req))
	assert.Equal(t, "a@b.co", req.Email)
	assert.Equal(t, []string{"member"}, req.Roles)
}

// FuzzDecoders feeds arbitrary bodies to every request decoder: each either
// decodes or yields a 4xx problem with a code, never a panic or a 5xx.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@b.co","name":"A","password":"secret-123","roles":["admin"]}`,
		`{"email":null,"name":{"x":1}}`, `{"token":"evat_x","password":"p"}`, `{"reason":"r"}`,
		`{"email":"\u0000","name":"\ud800"}`, `[]`, `{}`, `null`, `"x"`, `{"a":1}{`, "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&registerRequest{}, &updateRequest{}, &activationRequest{}, &reasonRequest{}, &loginRequest{}}
		for _, dst := range targets {
			err := decodeJSON(body, dst)
			if err == nil {
				continue
			}
			p := toProblem(err)
			if p.Status < 400 || p.Status >= 500 || p.Code == "" {
				t.Fatalf("body %q: problem %+v", body, p)
			}
		}
	})
}
