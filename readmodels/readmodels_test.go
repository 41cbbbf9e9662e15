package readmodels_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

func update(t *testing.T, rm *readmodels.Store, fn func(tx *readmodels.Tx) error) {
	t.Helper()
	require.NoError(t, rm.Update(context.Background(), fn))
}

func TestOpenRejectsUnknownDialect(t *testing.T) {
	t.Parallel()
	_, err := readmodels.Open(context.Background(), "oracle", nil, nil)
	require.Error(t, err)
}

func TestMigrateIsRepeatable(t *testing.T) { eachDialect(t, testMigrateIsRepeatable) }

func testMigrateIsRepeatable(t *testing.T, dialect string) {
	rm := newStore(t, dialect)
	require.NoError(t, rm.Migrate(context.Background()))
	d, err := rm.Dump(context.Background())
	require.NoError(t, err)
	for _, tbl := range readmodels.ProjectionTables {
		assert.Empty(t, d[tbl], tbl)
	}
}

func TestUserUpsertIsVersionGuarded(t *testing.T) { eachDialect(t, testUserUpsertIsVersionGuarded) }

func testUserUpsertIsVersionGuarded(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	id := uuid.New()
	u := readmodels.User{ID: id, Email: "a@x.org", Name: "A", Roles: []string{"member"}, Status: "pending",
		Version: 0, CreatedAt: t0, UpdatedAt: t0, Position: eventstore.At(1)}
	update(t, rm, func(tx *readmodels.Tx) error { return tx.PutUser(u) })

	act := t0.Add(time.Hour)
	u2 := u
	u2.Status, u2.Version, u2.UpdatedAt, u2.ActivatedAt, u2.Position = "active", 1, act, &act, eventstore.At(5)
	update(t, rm, func(tx *readmodels.Tx) error { return tx.PutUser(u2) })
	// An older version (a replayed create) does not win.
	update(t, rm, func(tx *readmodels.Tx) error { return tx.PutUser(u) })

	got, err := rm.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, u2, got)

	_, err = rm.User(ctx, uuid.New())
	assert.ErrorIs(t, err, readmodels.ErrNotFound)
}

func TestUsersPagesAndFilters(t *testing.T) { eachDialect(t, testUsersPagesAndFilters) }

func testUsersPagesAndFilters(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	var ids []uuid.UUID
	update(t, rm, func(tx *readmodels.Tx) error {
		for i := range 7 {
			id := uuid.New()
			ids = append(ids, id)
			st := "active"
			if i%2 == 0 {
				st = "pending"
			}
			if err := tx.PutUser(readmodels.User{ID: id, Email: fmt.Sprintf("u%d@x.org", i), Name: "U",
				Status: st, CreatedAt: t0, UpdatedAt: t0, Position: eventstore.At(uint64(i + 1))}); err != nil {
				return err
			}
		}
		return nil
	})

	var seen []uuid.UUID
	cursor := ""
	for range 10 {
		p, err := rm.Users(ctx, readmodels.UserFilter{Limit: 3, Cursor: cursor})
		require.NoError(t, err)
		assert.LessOrEqual(t, len(p.Items), 3)
		for _, u := range p.Items {
			seen = append(seen, u.ID)
			assert.Equal(t, []string{}, u.Roles, "no roles reads as an empty list")
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	assert.ElementsMatch(t, ids, seen)
	for i := 1; i < len(seen); i++ {
		assert.Less(t, seen[i-1].String(), seen[i].String(), "ordered by id")
	}

	p, err := rm.Users(ctx, readmodels.UserFilter{Status: "pending"})
	require.NoError(t, err)
	assert.Len(t, p.Items, 4)
	assert.Empty(t, p.NextCursor)

	p, err = rm.Users(ctx, readmodels.UserFilter{Email: "u3@x.org"})
	require.NoError(t, err)
	require.Len(t, p.Items, 1)
	assert.Equal(t, ids[3], p.Items[0].ID)

	for _, bad := range []string{"***", "bm90LWEtdXVpZA", "YXxi"} {
		_, err = rm.Users(ctx, readmodels.UserFilter{Cursor: bad})
		assert.ErrorIs(t, err, readmodels.ErrBadCursor, bad)
	}
	p, err = rm.Users(ctx, readmodels.UserFilter{Limit: 2})
	require.NoError(t, err)
	require.NotEmpty(t, p.NextCursor)
	_, err = rm.Users(ctx, readmodels.UserFilter{Status: "pending", Cursor: p.NextCursor})
	assert.ErrorIs(t, err, readmodels.ErrBadCursor, "another list's cursor")
}

func TestSessionsShowExpiryAtQueryTime(t *testing.T) {
	eachDialect(t, testSessionsShowExpiryAtQueryTime)
}

func testSessionsShowExpiryAtQueryTime(t *testing.T, dialect string) {
	ctx := context.Background()
	now := t0.Add(10 * time.Minute)
	rm := newStore(t, dialect, readmodels.WithClock(func() time.Time { return now }))
	userID := uuid.New()
	open := readmodels.Session{ID: uuid.New(), UserID: userID, Status: "open", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	stale := readmodels.Session{ID: uuid.New(), UserID: userID, Status: "open", CreatedAt: t0.Add(time.Second), ExpiresAt: now}
	ended := t0.Add(2 * time.Minute)
	out := readmodels.Session{ID: uuid.New(), UserID: userID, Status: "logged_out", CreatedAt: t0.Add(2 * time.Second),
		ExpiresAt: t0.Add(time.Hour), EndedAt: &ended, EndReason: "logged_out", Version: 1}
	other := readmodels.Session{ID: uuid.New(), UserID: uuid.New(), Status: "open", CreatedAt: t0, ExpiresAt: t0}
	update(t, rm, func(tx *readmodels.Tx) error {
		for _, s := range []readmodels.Session{open, stale, out, other} {
			if err := tx.PutSession(s); err != nil {
				return err
			}
		}
		return nil
	})

	all, err := rm.Sessions(ctx, userID, "", "", 0)
	require.NoError(t, err)
	require.Len(t, all.Items, 3)
	assert.Equal(t, out, all.Items[0], "newest first")
	assert.Equal(t, "expired", all.Items[1].Status, "open past expiry reads as expired")
	assert.Equal(t, stale.ID, all.Items[1].ID)
	assert.Equal(t, open, all.Items[2])

	openOnly, err := rm.Sessions(ctx, userID, "open", "", 0)
	require.NoError(t, err)
	require.Len(t, openOnly.Items, 1)
	assert.Equal(t, open.ID, openOnly.Items[0].ID)

	for status, want := range map[string][]uuid.UUID{"expired": {stale.ID}, "logged_out": {out.ID}, "revoked": nil} {
		p, err := rm.Sessions(ctx, userID, status, "", 0)
		require.NoError(t, err)
		var got []uuid.UUID
		for _, s := range p.Items {
			got = append(got, s.ID)
			assert.Equal(t, status, s.Status)
		}
		assert.Equal(t, want, got, status)
	}

	p1, err := rm.Sessions(ctx, userID, "", "", 2)
	require.NoError(t, err)
	require.Len(t, p1.Items, 2)
	require.NotEmpty(t, p1.NextCursor)
	p2, err := rm.Sessions(ctx, userID, "", p1.NextCursor, 2)
	require.NoError(t, err)
	require.Len(t, p2.Items, 1)
	assert.Equal(t, open.ID, p2.Items[0].ID)
	assert.Empty(t, p2.NextCursor)

	ids, err := rm.OpenSessionIDs(ctx, userID)
	require.NoError(t, err)
	assert.ElementsMatch(t, []uuid.UUID{open.ID, stale.ID}, ids, "status open, expired or not")

	_, err = rm.Sessions(ctx, userID, "", "%%%", 0)
	assert.ErrorIs(t, err, readmodels.ErrBadCursor)
	_, err = rm.Sessions(ctx, userID, "open", p1.NextCursor, 2)
	assert.ErrorIs(t, err, readmodels.ErrBadCursor, "another list's cursor")
	_, err = rm.Sessions(ctx, uuid.New(), "", p1.NextCursor, 2)
	assert.ErrorIs(t, err, readmodels.ErrBadCursor, "another user's cursor")

	due, err := rm.DueSessions(ctx, now, 0)
	require.NoError(t, err)
	require.Len(t, due, 2)
	assert.Equal(t, other.ID, due[0].ID, "earliest expiry first")
	assert.Equal(t, stale.ID, due[1].ID)
	assert.Equal(t, "open", due[1].Status, "stored status")
}

func TestActivationTokensChangeAndDue(t *testing.T) { eachDialect(t, testActivationTokensChangeAndDue) }

func testActivationTokensChangeAndDue(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	userID := uuid.New()
	tok := func(h string, i int) readmodels.ActivationToken {
		return readmodels.ActivationToken{TokenHash: h, UserID: userID, Status: "pending", RequestedBy: "admin",
			CreatedAt: t0.Add(time.Duration(i) * time.Minute), ExpiresAt: t0.Add(time.Duration(i)*time.Minute + time.Hour)}
	}
	update(t, rm, func(tx *readmodels.Tx) error {
		if err := tx.InsertActivationToken(tok("h1", 1), 1); err != nil {
			return err
		}
		return tx.InsertActivationToken(tok("h2", 2), 2)
	})
	// The second request supersedes the first (version 2), applied twice.
	for range 2 {
		update(t, rm, func(tx *readmodels.Tx) error {
			return tx.ChangeActivationTokens(readmodels.TokenChange{UserID: userID, Except: "h2", From: "pending",
				To: "superseded", At: t0.Add(2 * time.Minute), Version: 2})
		})
	}
	update(t, rm, func(tx *readmodels.Tx) error {
		// A stale event (version 1) does not touch h2.
		return tx.ChangeActivationTokens(readmodels.TokenChange{UserID: userID, Hash: "h2", To: "revoked", At: t0, Version: 1})
	})

	p, err := rm.ActivationTokens(ctx, userID, "", 1)
	require.NoError(t, err)
	require.Len(t, p.Items, 1)
	assert.Equal(t, "h2", p.Items[0].TokenHash)
	assert.Equal(t, "pending", p.Items[0].Status)
	require.NotEmpty(t, p.NextCursor)
	p, err = rm.ActivationTokens(ctx, userID, p.NextCursor, 1)
	require.NoError(t, err)
	require.Len(t, p.Items, 1)
	assert.Equal(t, "superseded", p.Items[0].Status)
	require.NotNil(t, p.Items[0].EndedAt)
	assert.Equal(t, t0.Add(2*time.Minute), *p.Items[0].EndedAt)
	assert.Empty(t, p.NextCursor)

	due, err := rm.DueActivationTokens(ctx, t0.Add(3*time.Hour), 10)
	require.NoError(t, err)
	require.Len(t, due, 1)
	assert.Equal(t, "h2", due[0].TokenHash)

	next, ok, err := rm.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, tok("h2", 2).ExpiresAt, next)

	update(t, rm, func(tx *readmodels.Tx) error {
		return tx.PutSession(readmodels.Session{ID: uuid.New(), UserID: userID, Status: "open", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)})
	})
	next, ok, err = rm.NextDue(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, t0.Add(time.Minute), next, "the earlier of sessions and tokens")
}

func TestNextDueEmpty(t *testing.T) { eachDialect(t, testNextDueEmpty) }

func testNextDueEmpty(t *testing.T, dialect string) {
	_, ok, err := newStore(t, dialect).NextDue(context.Background())
	require.NoError(t, err)
	assert.False(t, ok)
}

func auditRec(pos uint64, userID uuid.UUID, actor, action string, at time.Time) readmodels.AuditRecord {
	u := userID
	return readmodels.AuditRecord{EventID: uuid.New(), EventType: "user.x", AggregateID: userID.String(),
		AggregateType: "user", UserID: &u, ActorID: actor, Action: action, Resource: "user",
		ResourceID: userID.String(), Details: json.RawMessage(`{"a":1}`), OccurredAt: at,
		Position: eventstore.At(pos), Metadata: json.RawMessage(`{"actor_id":"` + actor + `"}`)}
}

func TestAuditOrderFiltersAndCursor(t *testing.T) { eachDialect(t, testAuditOrderFiltersAndCursor) }

func testAuditOrderFiltersAndCursor(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	alice, bob := uuid.New(), uuid.New()
	var recs []readmodels.AuditRecord
	for i := range 10 {
		u, action := alice, "user_updated"
		if i%3 == 0 {
			u, action = bob, "user_created"
		}
		recs = append(recs, auditRec(uint64(i+1), u, "actor-"+u.String()[:4], action, t0.Add(time.Duration(i)*time.Second)))
	}
	update(t, rm, func(tx *readmodels.Tx) error {
		for _, r := range recs {
			if err := tx.InsertAudit(r); err != nil {
				return err
			}
		}
		// Inserting again is a no-op.
		return tx.InsertAudit(recs[0])
	})

	collect := func(f readmodels.AuditFilter) []uint64 {
		t.Helper()
		var out []uint64
		for range 20 {
			p, err := rm.Audit(ctx, f)
			require.NoError(t, err)
			for _, r := range p.Items {
				out = append(out, r.Position.Commit)
			}
			if p.NextCursor == "" {
				return out
			}
			f.Cursor = p.NextCursor
		}
		t.Fatal("too many pages")
		return nil
	}
	assert.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, collect(readmodels.AuditFilter{Limit: 3}))
	assert.Equal(t, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, collect(readmodels.AuditFilter{Limit: 4, Desc: true}))
	assert.Equal(t, []uint64{1, 4, 7, 10}, collect(readmodels.AuditFilter{UserID: &bob, Limit: 1}))
	assert.Equal(t, []uint64{2, 3, 5, 6, 8, 9}, collect(readmodels.AuditFilter{Action: "user_updated"}))
	assert.Equal(t, []uint64{10, 7, 4, 1}, collect(readmodels.AuditFilter{ActorID: recs[0].ActorID, Desc: true, Limit: 2}))
	// From inclusive, To exclusive, whatever the zone the instant is written in.
	from := t0.Add(2 * time.Second).In(time.FixedZone("x", -7*3600))
	to := t0.Add(5 * time.Second).In(time.FixedZone("y", 13*3600))
	assert.Equal(t, []uint64{3, 4, 5}, collect(readmodels.AuditFilter{From: from, To: to}))

	p, err := rm.Audit(ctx, readmodels.AuditFilter{Limit: 1})
	require.NoError(t, err)
	got := p.Items[0]
	assert.Equal(t, recs[0].EventID, got.EventID)
	assert.Equal(t, recs[0].OccurredAt, got.OccurredAt)
	assert.JSONEq(t, string(recs[0].Details), string(got.Details))
	assert.JSONEq(t, string(recs[0].Metadata), string(got.Metadata))
	assert.Equal(t, bob, *got.UserID)

	_, err = rm.Audit(ctx, readmodels.AuditFilter{Cursor: "eA"})
	assert.ErrorIs(t, err, readmodels.ErrBadCursor)

	// A cursor pages through the list that made it, and no other: handed to
	// the other order or other filters it is refused, not read as a keyset.
	p, err = rm.Audit(ctx, readmodels.AuditFilter{Desc: true, Limit: 2})
	require.NoError(t, err)
	require.NotEmpty(t, p.NextCursor)
	_, err = rm.Audit(ctx, readmodels.AuditFilter{Desc: true, Limit: 2, Cursor: p.NextCursor})
	assert.NoError(t, err, "the same list")
	for name, f := range map[string]readmodels.AuditFilter{
		"ascending":   {Cursor: p.NextCursor},
		"by user":     {Desc: true, UserID: &bob, Cursor: p.NextCursor},
		"by action":   {Desc: true, Action: "user_updated", Cursor: p.NextCursor},
		"from a time": {Desc: true, From: t0, Cursor: p.NextCursor},
	} {
		_, err = rm.Audit(ctx, f)
		assert.ErrorIs(t, err, readmodels.ErrBadCursor, name)
	}
}

func TestUpdateRollsBackRowsAndCheckpointTogether(t *testing.T) {
	eachDialect(t, testUpdateRollsBackRowsAndCheckpointTogether)
}

func testUpdateRollsBackRowsAndCheckpointTogether(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	boom := errors.New("boom")
	err := rm.Update(ctx, func(tx *readmodels.Tx) error {
		if err := tx.InsertAudit(auditRec(1, uuid.New(), "a", "user_created", t0)); err != nil {
			return err
		}
		if err := tx.SetCheckpoint("audit", eventstore.At(1)); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	var txErr *readmodels.TxError
	assert.False(t, errors.As(err, &txErr), "a handler's error is not a transaction error")

	cp, err := rm.Checkpoint(ctx, "audit")
	require.NoError(t, err)
	assert.True(t, cp.IsZero())
	d, err := rm.Dump(ctx)
	require.NoError(t, err)
	assert.Empty(t, d["audit"])
}

func TestCheckpointsResetAndParked(t *testing.T) { eachDialect(t, testCheckpointsResetAndParked) }

func testCheckpointsResetAndParked(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	pair := eventstore.Position{Commit: 12, Prepare: 11}
	update(t, rm, func(tx *readmodels.Tx) error {
		if err := tx.InsertAudit(auditRec(1, uuid.New(), "a", "user_created", t0)); err != nil {
			return err
		}
		if err := tx.SetCheckpoint("audit", pair); err != nil {
			return err
		}
		if err := tx.SetCheckpoint("users", eventstore.At(3)); err != nil {
			return err
		}
		cp, err := tx.Checkpoint("audit")
		if err != nil {
			return err
		}
		assert.Equal(t, pair, cp, "read inside the transaction")
		for _, p := range []string{"audit", "audit", "users"} {
			if err := tx.Park(readmodels.ParkedEvent{Projection: p, Position: eventstore.At(2), EventID: "e2",
				EventType: "user.created", Error: "bad", Attempts: 3}); err != nil {
				return err
			}
		}
		return nil
	})
	cp, err := rm.Checkpoint(ctx, "audit")
	require.NoError(t, err)
	assert.Equal(t, pair, cp)
	parked, err := rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	assert.Equal(t, "audit", parked[0].Projection)
	assert.Equal(t, eventstore.At(2), parked[0].Position)
	assert.Equal(t, 3, parked[0].Attempts)
	assert.False(t, parked[0].ParkedAt.IsZero())

	require.Error(t, rm.Reset(ctx, "audit", "credentials"), "only projection tables are reset")
	require.NoError(t, rm.Reset(ctx, "audit", "audit"))
	cp, err = rm.Checkpoint(ctx, "audit")
	require.NoError(t, err)
	assert.True(t, cp.IsZero())
	cp, err = rm.Checkpoint(ctx, "users")
	require.NoError(t, err)
	assert.Equal(t, eventstore.At(3), cp, "other projections keep theirs")
	parked, err = rm.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	assert.Equal(t, "users", parked[0].Projection)
	d, err := rm.Dump(ctx)
	require.NoError(t, err)
	assert.Empty(t, d["audit"])
}

func TestCredentials(t *testing.T) { eachDialect(t, testCredentials) }

func testCredentials(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	id, userID := uuid.New(), uuid.New()
	require.NoError(t, rm.PutCredential(ctx, id, userID, "$argon2id$x"))
	require.NoError(t, rm.PutCredential(ctx, id, userID, "$argon2id$x"), "same again is a no-op")
	assert.ErrorIs(t, rm.PutCredential(ctx, id, userID, "$argon2id$y"), readmodels.ErrConflict)
	h, err := rm.Credential(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "$argon2id$x", h)
	_, err = rm.Credential(ctx, uuid.New())
	assert.ErrorIs(t, err, readmodels.ErrNotFound)

	require.NoError(t, rm.Reset(ctx, "users", readmodels.ProjectionTables...))
	_, err = rm.Credential(ctx, id)
	assert.NoError(t, err, "credentials survive a rebuild")
}

func TestIdempotencyKeys(t *testing.T) { eachDialect(t, testIdempotencyKeys) }

func testIdempotencyKeys(t *testing.T, dialect string) {
	ctx := context.Background()
	rm := newStore(t, dialect)
	got, err := rm.BeginIdempotent(ctx, "POST /v1/users", "k1", "fp1", "")
	require.NoError(t, err)
	assert.Nil(t, got, "a new key is claimed")

	got, err = rm.BeginIdempotent(ctx, "POST /v1/users", "k1", "fp2", "")
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, readmodels.IdempotentResponse{Fingerprint: "fp1"}, *got, "pending")

	got, err = rm.BeginIdempotent(ctx, "other scope", "k1", "fp1", "")
	require.NoError(t, err)
	assert.Nil(t, got, "keys are per scope")

	require.NoError(t, rm.FinishIdempotent(ctx, "POST /v1/users", "k1", 201, nil, []byte(`{"id":"x"}`)))
	assert.ErrorIs(t, rm.FinishIdempotent(ctx, "POST /v1/users", "k1", 500, nil, nil), readmodels.ErrNotFound, "finished once")
	got, err = rm.BeginIdempotent(ctx, "POST /v1/users", "k1", "fp1", "")
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, readmodels.IdempotentResponse{Fingerprint: "fp1", Status: 201, Body: []byte(`{"id":"x"}`), Done: true}, *got)

	require.NoError(t, rm.AbandonIdempotent(ctx, "POST /v1/users", "k1"))
	got, err = rm.BeginIdempotent(ctx, "POST /v1/users", "k1", "fp1", "")
	require.NoError(t, err)
	assert.NotNil(t, got, "a finished key is not abandoned")

	require.NoError(t, rm.AbandonIdempotent(ctx, "other scope", "k1"))
	got, err = rm.BeginIdempotent(ctx, "other scope", "k1", "fp9", "")
	require.NoError(t, err)
	assert.Nil(t, got, "an abandoned key can be claimed again")
}

// A key keeps the session that claimed it and the answer's own headers, and
// LookupIdempotent reads them without claiming anything.
func TestIdempotencyKeepsSessionAndHeaders(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		rm := newStore(t, dialect, readmodels.WithClock(func() time.Time { return now }), readmodels.WithIdempotencyLease(10*time.Second))

		got, err := rm.LookupIdempotent(ctx, "user-1", "k1")
		require.NoError(t, err)
		assert.Nil(t, got, "a free key")
		got, err = rm.LookupIdempotent(ctx, "user-1", "k1")
		require.NoError(t, err)
		assert.Nil(t, got, "a lookup claims nothing")

		got, err = rm.BeginIdempotent(ctx, "user-1", "k1", "fp", "session-a")
		require.NoError(t, err)
		require.Nil(t, got)
		got, err = rm.LookupIdempotent(ctx, "user-1", "k1")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, readmodels.IdempotentResponse{Fingerprint: "fp", Session: "session-a"}, *got, "pending")

		// Past the lease another session of the same caller takes the claim over.
		now = now.Add(11 * time.Second)
		got, err = rm.BeginIdempotent(ctx, "user-1", "k1", "fp", "session-b")
		require.NoError(t, err)
		require.Nil(t, got, "taken over")

		header := map[string]string{"Content-Type": "application/json", "ETag": `"3"`, "Location": "/v1/users/x"}
		require.NoError(t, rm.FinishIdempotent(ctx, "user-1", "k1", 201, header, []byte(`{"id":"x"}`)))
		want := readmodels.IdempotentResponse{Fingerprint: "fp", Session: "session-b", Status: 201, Header: header, Body: []byte(`{"id":"x"}`), Done: true}
		got, err = rm.LookupIdempotent(ctx, "user-1", "k1")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, want, *got)
		got, err = rm.BeginIdempotent(ctx, "user-1", "k1", "fp", "session-c")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, want, *got, "a retry from another session sees who claimed the key")

		got, err = rm.LookupIdempotent(ctx, "user-2", "k1")
		require.NoError(t, err)
		assert.Nil(t, got, "keys are per scope")
	})
}

// Rows kept before the idempotency_answer migration (no headers, no
// session) still replay after it: with nil headers and no session. The
// migration goes down again.
func TestIdempotencyRowsFromBeforeHeaders(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		rm := newStore(t, dialect)
		before, err := rm.MigrationBefore("_idempotency_answer.sql")
		require.NoError(t, err)
		require.NoError(t, rm.MigrateTo(ctx, before))
		require.NoError(t, rm.Exec(ctx, `INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at, done)
			VALUES ('user-1', 'old', 'fp', 200, $1, 1, $2)`, []byte(`{"status":"logged_out"}`), true))
		require.NoError(t, rm.Migrate(ctx))

		want := readmodels.IdempotentResponse{Fingerprint: "fp", Status: 200, Body: []byte(`{"status":"logged_out"}`), Done: true}
		got, err := rm.LookupIdempotent(ctx, "user-1", "old")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, want, *got)
		got, err = rm.BeginIdempotent(ctx, "user-1", "old", "fp", "session-a")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, want, *got)

		require.NoError(t, rm.MigrateTo(ctx, before), "down")
		require.NoError(t, rm.Migrate(ctx), "and up again")
		got, err = rm.LookupIdempotent(ctx, "user-1", "old")
		require.NoError(t, err)
		require.NotNil(t, got)
		assert.Equal(t, want, *got)
	})
}

func TestIdempotencyClaimLeaseTakeover(t *testing.T) {
	eachDialect(t, func(t *testing.T, dialect string) {
		ctx := context.Background()
		now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		s := newStore(t, dialect, readmodels.WithClock(func() time.Time { return now }), readmodels.WithIdempotencyLease(10*time.Second))
		prev, err := s.BeginIdempotent(ctx, "actor", "k1", "fp", "")
		require.NoError(t, err)
		require.Nil(t, prev)

		prev, err = s.BeginIdempotent(ctx, "actor", "k1", "fp", "")
		require.NoError(t, err)
		require.NotNil(t, prev, "within the lease the claim holds")
		assert.False(t, prev.Done)

		now = now.Add(11 * time.Second)
		prev, err = s.BeginIdempotent(ctx, "actor", "k1", "other-fp", "")
		require.NoError(t, err)
		require.NotNil(t, prev, "a different request never takes the key over")
		prev, err = s.BeginIdempotent(ctx, "actor", "k1", "fp", "")
		require.NoError(t, err)
		assert.Nil(t, prev, "past the lease the same request takes the key over")
		prev, err = s.BeginIdempotent(ctx, "actor", "k1", "fp", "")
		require.NoError(t, err)
		assert.NotNil(t, prev, "and holds it anew")

		require.NoError(t, s.FinishIdempotent(ctx, "actor", "k1", 201, nil, []byte(`{"ok":true}`)))
		now = now.Add(time.Hour)
		prev, err = s.BeginIdempotent(ctx, "actor", "k1", "fp", "")
		require.NoError(t, err)
		require.NotNil(t, prev)
		assert.True(t, prev.Done, "a finished answer is kept for replay")

		_, err = s.BeginIdempotent(ctx, "actor", "k2", "fp", "")
		require.NoError(t, err)
		n, err := s.AbandonPendingIdempotent(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "only the pending claim is freed")
	})
}
