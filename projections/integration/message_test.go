package integration_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections/integration"
)

var t0 = time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.UTC)

// Personal or secret values the events below carry; no message may.
const (
	piiEmail     = "ada.lovelace@example.com"
	piiName      = "Ada Lovelace"
	piiTokenHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	piiReason    = "Ada phoned from +44 20 7946 0000"
)

var piiCredential = uuid.MustParse("0f0f0f0f-1111-4222-8333-444455556666")

type typed interface{ EventType() string }

// recorded builds a stored event as a store would return it.
func recorded(t *testing.T, e typed, at time.Time) eventstore.RecordedEvent {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	data, err := json.Marshal(e)
	require.NoError(t, err)
	md, err := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: at, ActorID: "actor-1",
		CorrelationID: "corr-" + id.String(), SchemaVersion: 1})
	require.NoError(t, err)
	return eventstore.RecordedEvent{ID: id, Stream: "s", Type: e.EventType(), Data: data, Metadata: md, RecordedAt: at.Add(time.Minute)}
}

func TestNewMessageMapsEveryPublishedTypeWithoutPII(t *testing.T) {
	uid, sid, admin := uuid.New(), uuid.New(), uuid.New().String()
	em, name := piiEmail, piiName
	exp := t0.Add(48 * time.Hour)
	cases := []struct {
		event typed
		data  string
	}{
		{user.Created{UserID: uid, Email: piiEmail, Name: piiName, Roles: []string{"member"}, CredentialID: &piiCredential},
			`{"roles":["member"]}`},
		{user.Created{UserID: uid, Email: piiEmail, Name: piiName}, `{"roles":[]}`},
		{user.Updated{UserID: uid, Email: &em, Name: &name, Roles: []string{"admin"}, CredentialID: &piiCredential, UpdatedBy: admin},
			`{"changed":["email","name","roles","password"],"roles":["admin"]}`},
		{user.Updated{UserID: uid, Name: &name, UpdatedBy: admin}, `{"changed":["name"]}`},
		{user.ActivationRequested{UserID: uid, TokenHash: piiTokenHash, ExpiresAt: exp, RequestedBy: admin},
			`{"expires_at":"2030-05-08T07:08:09.123456789Z"}`},
		{user.Activated{UserID: uid, ActivatedBy: uid.String(), Method: user.MethodToken, TokenHash: piiTokenHash, CredentialID: &piiCredential},
			`{"method":"token","by":"` + uid.String() + `"}`},
		{user.Deactivated{UserID: uid, DeactivatedBy: admin, Reason: piiReason}, `{"by":"` + admin + `"}`},
		{user.StatusChanged{UserID: uid, From: user.StatusActive, To: user.StatusSuspended, Reason: piiReason, ChangedBy: admin},
			`{"from":"active","to":"suspended","by":"` + admin + `"}`},
		{user.ActivationTokenExpired{UserID: uid, TokenHash: piiTokenHash, ExpiredAt: exp}, `{"expired_at":"2030-05-08T07:08:09.123456789Z"}`},
		{user.Deleted{UserID: uid, DeletedBy: admin, Reason: piiReason}, `{"by":"` + admin + `"}`},
		{session.LoggedIn{SessionID: sid, UserID: uid, TokenHash: piiTokenHash, ExpiresAt: exp},
			`{"session_id":"` + sid.String() + `","expires_at":"2030-05-08T07:08:09.123456789Z"}`},
		{session.LoggedOut{SessionID: sid, UserID: uid}, `{"session_id":"` + sid.String() + `"}`},
		{session.Expired{SessionID: sid, UserID: uid, ExpiredAt: exp},
			`{"session_id":"` + sid.String() + `","expires_at":"2030-05-08T07:08:09.123456789Z"}`},
		{session.Revoked{SessionID: sid, UserID: uid, Reason: session.ReasonUserSuspended, RevokedBy: "system"},
			`{"session_id":"` + sid.String() + `","reason":"user_suspended"}`},
		{session.Revoked{SessionID: sid, UserID: uid, Reason: piiReason, RevokedBy: admin},
			`{"session_id":"` + sid.String() + `","reason":"other"}`},
	}
	for _, c := range cases {
		t.Run(c.event.EventType(), func(t *testing.T) {
			ev := recorded(t, c.event, t0)
			m, ok, err := integration.NewMessage(ev)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, c.event.EventType(), m.Type)
			assert.Equal(t, integration.ContractVersion, m.Version)
			assert.Equal(t, ev.ID, m.EventID)
			assert.Equal(t, t0, m.OccurredAt)
			assert.Equal(t, uid, m.UserID)
			assert.JSONEq(t, c.data, string(m.Data))

			body, err := json.Marshal(m)
			require.NoError(t, err)
			assertNoPII(t, string(body))
		})
	}
}

func assertNoPII(t *testing.T, body string) {
	t.Helper()
	for _, secret := range []string{piiEmail, piiName, piiTokenHash, piiReason, piiCredential.String(), "token_hash", "credential"} {
		assert.NotContains(t, body, secret)
	}
}

func TestNewMessageSkipsClaimsAndUnknownTypes(t *testing.T) {
	for _, ev := range []eventstore.RecordedEvent{
		recorded(t, email.Claimed{UserID: uuid.New()}, t0),
		recorded(t, email.Released{UserID: uuid.New()}, t0),
		{ID: uuid.New(), Type: "billing.invoice_paid", Data: []byte(`{}`)},
	} {
		_, ok, err := integration.NewMessage(ev)
		require.NoError(t, err, ev.Type)
		assert.False(t, ok, ev.Type)
	}
}

func TestNewMessageWithoutMetadataUsesRecordedAt(t *testing.T) {
	ev := recorded(t, user.Deleted{UserID: uuid.New(), DeletedBy: "system"}, t0)
	ev.Metadata = nil
	m, ok, err := integration.NewMessage(ev)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, t0.Add(time.Minute), m.OccurredAt)
}

func TestNewMessageRefusesUndecodableEvents(t *testing.T) {
	ev := recorded(t, user.Created{UserID: uuid.New()}, t0)
	ev.Data = []byte(`{"user_id": 42}`)
	_, _, err := integration.NewMessage(ev)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "integration: "), err.Error())

	ev = recorded(t, user.Created{UserID: uuid.New()}, t0)
	ev.Metadata = []byte(`{"schema_version": 99}`)
	_, _, err = integration.NewMessage(ev)
	require.Error(t, err, "a schema newer than this build reads")
}
