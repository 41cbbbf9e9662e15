package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/session"
	"evident/domain/user"
)

// dataCases are one event of every user.* and auth.* type as Evident
// writes them, and data that readUser and readSession leave to the
// domain's decoders.
func dataCases(t testing.TB) (types []string, data [][]byte, plain int) {
	id, cred := uuid.New(), uuid.New()
	at := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	email, name := "ann@example.com", "Ann"
	evs := []interface{ EventType() string }{
		user.Created{UserID: id, Email: email, Name: name, Roles: []string{"member", "admin"}, CredentialID: &cred},
		user.Created{UserID: id, Email: email, Name: name, Roles: []string{}},
		user.Created{UserID: id, Email: email, Name: name},
		user.Updated{UserID: id, Email: &email, Name: &name, Roles: []string{"admin"}, CredentialID: &cred, UpdatedBy: "admin"},
		user.Updated{UserID: id, UpdatedBy: "admin"},
		user.ActivationRequested{UserID: id, TokenHash: "abc", ExpiresAt: at, RequestedBy: "admin"},
		user.Activated{UserID: id, ActivatedBy: "x", Method: user.MethodToken, TokenHash: "abc", CredentialID: &cred},
		user.Deactivated{UserID: id, DeactivatedBy: "admin", Reason: "left"},
		user.StatusChanged{UserID: id, From: user.StatusActive, To: user.StatusSuspended, Reason: "r", ChangedBy: "admin"},
		user.ActivationTokenExpired{UserID: id, TokenHash: "abc", ExpiredAt: at},
		user.Deleted{UserID: id, DeletedBy: "admin"},
		session.LoggedIn{SessionID: id, UserID: cred, TokenHash: "t", ExpiresAt: at.In(time.FixedZone("", 7200))},
		session.LoggedOut{SessionID: id, UserID: cred},
		session.Expired{SessionID: id, UserID: cred, ExpiredAt: at},
		session.Revoked{SessionID: id, UserID: cred, Reason: session.ReasonUserDeleted, RevokedBy: "system"},
	}
	for _, e := range evs {
		b, err := json.Marshal(e)
		require.NoError(t, err)
		types, data = append(types, e.EventType()), append(data, b)
	}
	plain = len(evs)
	odd := []struct{ typ, data string }{
		{user.TypeCreated, `{"user_id":"` + id.String() + `","email":"caf\u00e9","roles":null}`},
		{user.TypeCreated, `{"user_id":"` + id.String() + `","roles":["a",1]}`},
		{user.TypeCreated, `{"USER_ID":"` + id.String() + `","extra":true}`},
		{user.TypeCreated, `{"user_id":"nope"}`},
		{user.TypeCreated, `{"user_id":"` + id.String() + `","roles":["a","b"],"roles":["c"]}`},
		{user.TypeUpdated, `{"user_id":"` + id.String() + `","email":null,"name":"é"}`},
		{user.TypeUpdated, `{"user_id":"` + id.String() + `","email":"a","email":null,"credential_id":null,"roles":null}`},
		{user.TypeUpdated, `{"user_id":"` + id.String() + `","name":nul}`},
		{user.TypeActivationRequested, `{"expires_at":"tomorrow"}`},
		{user.TypeActivationRequested, `{"expires_at":null}`},
		{session.TypeLoggedIn, `{"session_id":"` + id.String() + `"} trailing`},
		{session.TypeRevoked, `[]`},
		{session.TypeExpired, ``},
		{"user.unknown", `{}`},
	}
	for _, c := range odd {
		types, data = append(types, c.typ), append(data, []byte(c.data))
	}
	return types, data, plain
}

// readUser and readSession read what they take as the domain's decoders
// do, and the events of any data are the decoders', errors included.
func TestDataDecodesAsTheDomain(t *testing.T) {
	types, data, plain := dataCases(t)
	for i := range types {
		checkData(t, types[i], 1, data[i])
		checkData(t, types[i], 0, data[i])
		checkData(t, types[i], 2, data[i]) // newer than this build: the decoders' error
		_, uok := readUser(types[i], data[i])
		_, sok := readSession(types[i], data[i])
		if i < plain {
			assert.True(t, uok || sok, "%s %s: read without json.Unmarshal", types[i], data[i])
		}
	}
}

func FuzzData(f *testing.F) {
	types, data, _ := dataCases(f)
	for i := range types {
		f.Add(types[i], data[i])
	}
	f.Fuzz(func(t *testing.T, typ string, b []byte) { checkData(t, typ, 1, b) })
}

func checkData(t *testing.T, typ string, schema int, b []byte) {
	t.Helper()
	if user.IsType(typ) || !session.IsType(typ) {
		got, err := decodeUser(typ, schema, b)
		want, werr := user.Decode(typ, schema, b)
		assert.Equal(t, want, got, "%s %q", typ, b)
		assert.Equal(t, werr, err, "%s %q", typ, b)
	}
	if session.IsType(typ) {
		got, err := decodeSession(typ, schema, b)
		want, werr := session.Decode(typ, schema, b)
		assert.Equal(t, want, got, "%s %q", typ, b)
		assert.Equal(t, werr, err, "%s %q", typ, b)
	}
}
