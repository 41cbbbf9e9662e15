package user_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"evident/domain/user"
)

// allEvents holds one fully populated value of every user event type.
func allEvents() []user.Event {
	return []user.Event{
		user.Created{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{user.RoleAdmin, user.RoleMember}, CredentialID: ptr(credA)},
		user.Updated{UserID: id, Email: ptr("b@example.com"), Name: ptr("B"), Roles: []string{user.RoleAuditor}, CredentialID: ptr(credB), UpdatedBy: "admin-1"},
		user.ActivationRequested{UserID: id, TokenHash: h1, ExpiresAt: exp, RequestedBy: "admin-1"},
		user.Activated{UserID: id, ActivatedBy: "anonymous", Method: user.MethodToken, TokenHash: h1, CredentialID: ptr(credA)},
		user.Deactivated{UserID: id, DeactivatedBy: "admin-1", Reason: "left"},
		user.StatusChanged{UserID: id, From: user.StatusActive, To: user.StatusSuspended, Reason: "abuse", ChangedBy: "admin-1"},
		user.ActivationTokenExpired{UserID: id, TokenHash: h1, ExpiredAt: exp},
		user.Deleted{UserID: id, DeletedBy: "admin-1", Reason: "gdpr"},
	}
}

func TestEventTypeNamesAreStable(t *testing.T) {
	t.Parallel()
	// DESIGN §2. These strings are in the log: never rename one.
	want := []string{
		"user.created", "user.updated", "user.activation_requested", "user.activated",
		"user.deactivated", "user.status_changed", "user.activation_token_expired", "user.deleted",
	}
	evs := allEvents()
	if len(evs) != len(want) {
		t.Fatalf("allEvents has %d types, want %d", len(evs), len(want))
	}
	for i, e := range evs {
		if e.EventType() != want[i] {
			t.Errorf("%T.EventType() = %q, want %q", e, e.EventType(), want[i])
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	minimal := []user.Event{
		user.Created{UserID: id, Email: "a@example.com", Name: "A", Roles: []string{user.RoleMember}},
		user.Updated{UserID: id, Name: ptr("")},
		user.Activated{UserID: id, Method: user.MethodAdmin},
		user.Deactivated{UserID: id},
		user.StatusChanged{UserID: id, From: user.StatusPending, To: user.StatusSuspended},
		user.Deleted{UserID: id},
	}
	for _, e := range append(allEvents(), minimal...) {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("marshal %T: %v", e, err)
		}
		for _, schema := range []int{0, user.SchemaVersion} {
			got, err := user.Decode(e.EventType(), schema, data)
			if err != nil {
				t.Fatalf("decode %s schema %d: %v", e.EventType(), schema, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("round trip %s schema %d\n got: %#v\nwant: %#v", e.EventType(), schema, got, e)
			}
		}
	}
}

// TestDecodeStored pins the schema-1 JSON shape: events already in a log
// must keep decoding to the same values.
func TestDecodeStored(t *testing.T) {
	t.Parallel()
	uid := `"user_id":"` + id.String() + `"`
	cases := []struct {
		typ, data string
		want      user.Event
	}{
		{user.TypeCreated, `{` + uid + `,"email":"ann@example.com","name":"Ann","roles":["member"],"credential_id":"` + credA.String() + `"}`,
			user.Created{UserID: id, Email: "ann@example.com", Name: "Ann", Roles: []string{"member"}, CredentialID: ptr(credA)}},
		{user.TypeUpdated, `{` + uid + `,"name":"B","roles":["admin"],"updated_by":"admin-1"}`,
			user.Updated{UserID: id, Name: ptr("B"), Roles: []string{"admin"}, UpdatedBy: "admin-1"}},
		{user.TypeActivationRequested, `{` + uid + `,"token_hash":"hash-1","expires_at":"2025-03-15T09:26:53Z","requested_by":"admin-1"}`,
			user.ActivationRequested{UserID: id, TokenHash: h1, ExpiresAt: exp, RequestedBy: "admin-1"}},
		{user.TypeActivated, `{` + uid + `,"activated_by":"x","method":"token","token_hash":"hash-1"}`,
			user.Activated{UserID: id, ActivatedBy: "x", Method: user.MethodToken, TokenHash: h1}},
		{user.TypeDeactivated, `{` + uid + `,"deactivated_by":"admin-1","reason":"left"}`,
			user.Deactivated{UserID: id, DeactivatedBy: "admin-1", Reason: "left"}},
		{user.TypeStatusChanged, `{` + uid + `,"from":"active","to":"suspended","reason":"abuse","changed_by":"admin-1"}`,
			user.StatusChanged{UserID: id, From: user.StatusActive, To: user.StatusSuspended, Reason: "abuse", ChangedBy: "admin-1"}},
		{user.TypeActivationTokenExpired, `{` + uid + `,"token_hash":"hash-1","expired_at":"2025-03-15T09:26:53Z"}`,
			user.ActivationTokenExpired{UserID: id, TokenHash: h1, ExpiredAt: exp}},
		{user.TypeDeleted, `{` + uid + `,"deleted_by":"admin-1","reason":"gdpr"}`,
			user.Deleted{UserID: id, DeletedBy: "admin-1", Reason: "gdpr"}},
	}
	for _, tc := range cases {
		got, err := user.Decode(tc.typ, 1, []byte(tc.data))
		if err != nil {
			t.Fatalf("decode %s: %v", tc.typ, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decode %s\n got: %#v\nwant: %#v", tc.typ, got, tc.want)
		}
		// And what we write today still has those fields.
		out, err := json.Marshal(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		var gotMap, wantMap map[string]any
		if err := json.Unmarshal(out, &gotMap); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(tc.data), &wantMap); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotMap, wantMap) {
			t.Errorf("marshal %s\n got: %s\nwant: %s", tc.typ, out, tc.data)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, typ string
		schema    int
		data      string
		inErr     string
	}{
		{"unknown type", "user.renamed", 1, `{}`, "unknown event type"},
		{"session type is not a user type", "auth.user_logged_in", 1, `{}`, "unknown event type"},
		{"empty type", "", 1, `{}`, "unknown event type"},
		{"schema too new", user.TypeCreated, user.SchemaVersion + 1, `{}`, "newer"},
		{"malformed json", user.TypeCreated, 1, `{"user_id":`, "decode"},
		{"wrong field type", user.TypeActivationRequested, 1, `{"expires_at":42}`, "decode"},
		{"bad uuid", user.TypeDeleted, 1, `{"user_id":"not-a-uuid"}`, "decode"},
	}
	for _, tc := range cases {
		e, err := user.Decode(tc.typ, tc.schema, []byte(tc.data))
		if err == nil || e != nil {
			t.Errorf("%s: got %#v, %v; want an error", tc.name, e, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.inErr) {
			t.Errorf("%s: error %q does not mention %q", tc.name, err, tc.inErr)
		}
	}
}

func TestIsType(t *testing.T) {
	t.Parallel()
	for _, e := range allEvents() {
		if !user.IsType(e.EventType()) {
			t.Errorf("IsType(%q) = false", e.EventType())
		}
	}
	for _, typ := range []string{"", "user", "user.", "User.Created", "user.created ", "auth.user_logged_in", "email.claimed"} {
		if user.IsType(typ) {
			t.Errorf("IsType(%q) = true", typ)
		}
	}
}
