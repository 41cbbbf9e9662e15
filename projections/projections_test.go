package projections_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"
)

func TestNamesAreStable(t *testing.T) {
	t.Parallel()
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name())
		_, ok := p.(projections.Tabled)
		assert.True(t, ok, p.Name())
	}
	assert.Equal(t, []string{"users", "sessions", "activation_tokens", "audit"}, names)
}

func TestUsersProjection(t *testing.T) { eachDialect(t, testUsersProjection) }

func testUsersProjection(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	id := uuid.New()
	e.register(t, id, "ann@example.org", "member")
	e.applyAll(t, projections.Users())

	u, err := e.rm.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "pending", u.Status)
	assert.Equal(t, "ann@example.org", u.Email)
	assert.Equal(t, []string{"member"}, u.Roles)
	assert.Equal(t, int64(0), u.Version)
	assert.Equal(t, t0.Add(2*time.Second), u.CreatedAt, "occurred_at of the event, not the clock")
	assert.Equal(t, u.CreatedAt, u.UpdatedAt)

	name, mail := "Ann B", "annb@example.org"
	e.append(t, userStream(id),
		user.Updated{UserID: id, Name: &name, Email: &mail, Roles: []string{"admin"}, UpdatedBy: "admin"},
		user.ActivationRequested{UserID: id, TokenHash: "h", ExpiresAt: t0.Add(time.Hour), RequestedBy: "admin"},
		user.Activated{UserID: id, ActivatedBy: id.String(), Method: user.MethodToken, TokenHash: "h"},
	)
	e.applyAll(t, projections.Users())
	u, err = e.rm.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "active", u.Status)
	assert.Equal(t, name, u.Name)
	assert.Equal(t, mail, u.Email)
	assert.Equal(t, []string{"admin"}, u.Roles)
	assert.Equal(t, int64(3), u.Version, "the stream version")
	require.NotNil(t, u.ActivatedAt)
	assert.Equal(t, u.UpdatedAt, *u.ActivatedAt)

	e.append(t, userStream(id), user.Deactivated{UserID: id, DeactivatedBy: "admin"})
	e.applyAll(t, projections.Users())
	u, _ = e.rm.User(ctx, id)
	assert.Equal(t, "inactive", u.Status)

	e.append(t, userStream(id), user.StatusChanged{UserID: id, From: user.StatusInactive, To: user.StatusSuspended, ChangedBy: "admin"})
	e.applyAll(t, projections.Users())
	u, _ = e.rm.User(ctx, id)
	assert.Equal(t, "suspended", u.Status)

	sid, _ := e.login(t, id, t0.Add(time.Hour))
	last := e.append(t, userStream(id), user.Deleted{UserID: id, DeletedBy: "admin"})
	// A late session event neither changes nor resurrects the deleted user.
	e.append(t, sessionStream(sid), session.Revoked{SessionID: sid, UserID: id, Reason: session.ReasonUserDeleted, RevokedBy: "system"})
	e.applyAll(t, projections.Users())
	u, err = e.rm.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "deleted", u.Status)
	require.NotNil(t, u.DeletedAt)
	assert.Equal(t, int64(6), u.Version)
	assert.Equal(t, last, u.Position)

	// Session events for a user that has no row create none.
	ghost := uuid.New()
	e.login(t, ghost, t0.Add(time.Hour))
	e.applyAll(t, projections.Users())
	_, err = e.rm.User(ctx, ghost)
	assert.ErrorIs(t, err, readmodels.ErrNotFound)
}

func TestSessionsProjection(t *testing.T) { eachDialect(t, testSessionsProjection) }

func testSessionsProjection(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	uid := uuid.New()
	far := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Microsecond)
	s1, _ := e.login(t, uid, far)
	s2, _ := e.login(t, uid, far)
	s3, _ := e.login(t, uid, far)
	s4, _ := e.login(t, uid, far)
	e.append(t, sessionStream(s1), session.LoggedOut{SessionID: s1, UserID: uid})
	e.append(t, sessionStream(s2), session.Revoked{SessionID: s2, UserID: uid, Reason: session.ReasonUserDeactivated, RevokedBy: "system"})
	e.append(t, sessionStream(s3), session.Expired{SessionID: s3, UserID: uid, ExpiredAt: t0})
	// A second close of a closed session changes nothing.
	e.append(t, sessionStream(s1), session.Revoked{SessionID: s1, UserID: uid, Reason: "revoked", RevokedBy: "admin"})
	e.applyAll(t, projections.Sessions())

	p, err := e.rm.Sessions(ctx, uid, "", "", 0)
	require.NoError(t, err)
	got := map[uuid.UUID]readmodels.Session{}
	for _, s := range p.Items {
		got[s.ID] = s
	}
	require.Len(t, got, 4)
	assert.Equal(t, "logged_out", got[s1].Status)
	assert.Equal(t, "logged_out", got[s1].EndReason)
	assert.Equal(t, "revoked", got[s2].Status)
	assert.Equal(t, session.ReasonUserDeactivated, got[s2].EndReason)
	assert.Equal(t, "expired", got[s3].Status)
	require.NotNil(t, got[s3].EndedAt)
	assert.Equal(t, t0, *got[s3].EndedAt, "ended when it expired")
	assert.Equal(t, "open", got[s4].Status)
	assert.Nil(t, got[s4].EndedAt)
	assert.Equal(t, far, got[s4].ExpiresAt)
	assert.Equal(t, uid, got[s4].UserID)

	ids, err := e.rm.OpenSessionIDs(ctx, uid)
	require.NoError(t, err)
	assert.Equal(t, []uuid.UUID{s4}, ids)
}

func TestActivationTokensProjection(t *testing.T) { eachDialect(t, testActivationTokensProjection) }

func testActivationTokensProjection(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	req := func(id uuid.UUID, h string) user.ActivationRequested {
		return user.ActivationRequested{UserID: id, TokenHash: h, ExpiresAt: t0.Add(time.Hour), RequestedBy: "admin"}
	}
	a, b, c, d := uuid.New(), uuid.New(), uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{a, b, c, d} {
		e.register(t, id, id.String()+"@x.org")
	}
	// a: superseded, then used; a third token is issued and revoked by nothing else.
	e.append(t, userStream(a), req(a, "a1"), req(a, "a2"),
		user.Activated{UserID: a, ActivatedBy: a.String(), Method: user.MethodToken, TokenHash: "a2"})
	// b: admin activation revokes the pending token.
	e.append(t, userStream(b), req(b, "b1"), user.Activated{UserID: b, ActivatedBy: "admin", Method: user.MethodAdmin})
	// c: expiry, then a new token, then suspension revokes it.
	e.append(t, userStream(c), req(c, "c1"),
		user.ActivationTokenExpired{UserID: c, TokenHash: "c1", ExpiredAt: t0.Add(time.Hour)},
		req(c, "c2"),
		user.StatusChanged{UserID: c, From: user.StatusPending, To: user.StatusSuspended, ChangedBy: "admin"})
	// d: deactivation and deletion revoke; the deleted one stays revoked.
	e.append(t, userStream(d), req(d, "d1"), user.Deactivated{UserID: d, DeactivatedBy: "admin"}, req(d, "d2"), user.Deleted{UserID: d, DeletedBy: "admin"})
	e.applyAll(t, projections.ActivationTokens())

	status := func(id uuid.UUID) map[string]string {
		p, err := e.rm.ActivationTokens(ctx, id, "", 0)
		require.NoError(t, err)
		out := map[string]string{}
		for _, tk := range p.Items {
			out[tk.TokenHash] = tk.Status
			assert.Equal(t, id, tk.UserID)
			assert.Equal(t, "admin", tk.RequestedBy)
		}
		return out
	}
	assert.Equal(t, map[string]string{"a1": "superseded", "a2": "used"}, status(a))
	assert.Equal(t, map[string]string{"b1": "revoked"}, status(b))
	assert.Equal(t, map[string]string{"c1": "expired", "c2": "revoked"}, status(c))
	assert.Equal(t, map[string]string{"d1": "revoked", "d2": "revoked"}, status(d))

	due, err := e.rm.DueActivationTokens(ctx, t0.Add(48*time.Hour), 0)
	require.NoError(t, err)
	assert.Empty(t, due, "nothing pending")
}

func TestAuditProjection(t *testing.T) { eachDialect(t, testAuditProjection) }

func testAuditProjection(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	id := uuid.New()
	first := e.register(t, id, "zed@example.org") // claim + created
	sid, loginPos := e.login(t, id, t0.Add(time.Hour))
	e.append(t, sessionStream(sid), session.Revoked{SessionID: sid, UserID: id, Reason: session.ReasonUserSuspended, RevokedBy: "admin"})
	e.append(t, userStream(id), user.ActivationTokenExpired{UserID: id, TokenHash: "h", ExpiredAt: t0})
	e.append(t, "other-1", unknownEvent{X: 1})
	e.applyAll(t, projections.Audit())

	p, err := e.rm.Audit(ctx, readmodels.AuditFilter{})
	require.NoError(t, err)
	require.Len(t, p.Items, 4, "email.* claims and unknown types are not audited")
	var actions []string
	for _, r := range p.Items {
		actions = append(actions, r.Action)
	}
	assert.Equal(t, []string{"user_created", "user_logged_in", "session_revoked", "activation_token_expired"}, actions)

	created := p.Items[0]
	assert.Equal(t, first, created.Position)
	assert.Equal(t, "user.created", created.EventType)
	assert.Equal(t, "user", created.AggregateType)
	assert.Equal(t, id.String(), created.AggregateID)
	assert.Equal(t, "user", created.Resource)
	assert.Equal(t, id.String(), created.ResourceID)
	assert.Equal(t, id, *created.UserID)
	assert.Equal(t, "actor-1", created.ActorID)
	var md eventstore.Metadata
	require.NoError(t, json.Unmarshal(created.Metadata, &md))
	assert.Equal(t, created.EventID, md.EventID)
	assert.Equal(t, md.OccurredAt, created.OccurredAt)
	var details map[string]any
	require.NoError(t, json.Unmarshal(created.Details, &details))
	assert.Equal(t, "zed@example.org", details["email"])

	login := p.Items[1]
	assert.Equal(t, loginPos, login.Position)
	assert.Equal(t, "session", login.AggregateType)
	assert.Equal(t, sid.String(), login.AggregateID)
	assert.Equal(t, sid.String(), login.ResourceID)
	assert.Equal(t, id, *login.UserID)

	byUser, err := e.rm.Audit(ctx, readmodels.AuditFilter{UserID: &id, Action: "session_revoked"})
	require.NoError(t, err)
	assert.Len(t, byUser.Items, 1)
}

func TestApplyingTwiceChangesNothing(t *testing.T) { eachDialect(t, testApplyingTwiceChangesNothing) }

func testApplyingTwiceChangesNothing(t *testing.T, dialect string) {
	e := newEnv(t, dialect)
	e.workload(t, 8)
	e.applyAll(t, projections.All()...)
	once := e.dump(t)
	require.NotEmpty(t, once["users"])
	e.applyAll(t, projections.All()...)
	assert.Equal(t, once, e.dump(t))
}

func TestActionNames(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "user_created", projections.Action(user.TypeCreated))
	assert.Equal(t, "session_revoked", projections.Action(session.TypeRevoked))
	assert.Equal(t, "activation_token_expired", projections.Action(user.TypeActivationTokenExpired))
	assert.Equal(t, "", projections.Action("email.claimed"))
}
