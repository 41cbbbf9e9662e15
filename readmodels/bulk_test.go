package readmodels_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

// bulkRows are rows of every projection table: more than one multi-row
// statement holds, and audit texts that need escaping on their way through
// SQLite's JSON.
func bulkRows() ([]readmodels.User, []readmodels.Session, []readmodels.TokenRow, []readmodels.AuditRecord) {
	var (
		us  []readmodels.User
		ss  []readmodels.Session
		ts  []readmodels.TokenRow
		as  []readmodels.AuditRecord
		end = t0.Add(time.Hour)
	)
	details := []string{`{"s":"a\"b\\c\u0001 é 😀 \u00e9"}`, "{\n\t\"a\": 1}", "", `{"x":"` + "\x01\x1f" + `"}`}
	for i := range 150 {
		u := mkUser(fmt.Sprint("u", i), int64(i+1))
		u.Roles = []string{} // as read back
		if i%3 == 0 {
			u.Roles, u.ActivatedAt = []string{"admin", `we"ird`}, &end
		}
		us = append(us, u)
		ss = append(ss, readmodels.Session{ID: uuid.New(), UserID: u.ID, Status: "open", CreatedAt: t0, ExpiresAt: end,
			EndReason: "", Version: int64(i)})
		tok := readmodels.TokenRow{ActivationToken: readmodels.ActivationToken{TokenHash: fmt.Sprintf("h%03d", i), UserID: u.ID,
			Status: "pending", RequestedBy: "admin", CreatedAt: t0, ExpiresAt: end}, Version: int64(i)}
		if i%2 == 0 {
			tok.EndedAt = &end
		}
		if i%10 == 7 { // read back by hash: quoted in an array literal on PostgreSQL
			tok.TokenHash = fmt.Sprintf(`h"%03d\\,{x} é NULL`, i)
		}
		ts = append(ts, tok)
		a := auditRec(uint64(i+1), u.ID, "actor\"1", "user_created", t0.Add(time.Duration(i)*time.Second))
		a.Details = json.RawMessage(details[i%len(details)])
		if i%5 == 0 {
			a.UserID, a.Metadata = nil, nil
		}
		as = append(as, a)
	}
	return us, ss, ts, as
}

// Replay's bulk writes leave the rows the Tx methods leave, and its reads
// return them; on PostgreSQL also through a shadow (COPY for audit).
func TestReplayWritesWhatTxWrites(t *testing.T) { eachDialect(t, testReplayWritesWhatTxWrites) }

func testReplayWritesWhatTxWrites(t *testing.T, dialect string) {
	ctx := context.Background()
	us, ss, ts, as := bulkRows()
	one := newStore(t, dialect)
	update(t, one, func(tx *readmodels.Tx) error {
		for _, u := range us {
			require.NoError(t, tx.PutUser(u))
		}
		for _, s := range ss {
			require.NoError(t, tx.PutSession(s))
		}
		for _, tk := range ts {
			require.NoError(t, tx.InsertActivationToken(tk.ActivationToken, tk.Version))
		}
		for _, a := range as {
			require.NoError(t, tx.InsertAudit(a))
		}
		return nil
	})
	want, err := one.Dump(ctx)
	require.NoError(t, err)

	write := func(b *readmodels.Bulk) {
		require.NoError(t, b.PutUsers(us))
		require.NoError(t, b.PutSessions(ss))
		require.NoError(t, b.PutActivationTokens(ts))
		require.NoError(t, b.InsertAudit(as))
	}
	bulk := newStore(t, dialect)
	rp := bulk.NewReplay()
	defer rp.Close()
	for range 2 { // the second time as a replay of the same rows: nothing changes
		require.NoError(t, rp.Update(ctx, func(b *readmodels.Bulk) error { write(b); return nil }))
		got, err := bulk.Dump(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}

	require.NoError(t, rp.Update(ctx, func(b *readmodels.Bulk) error {
		ids := []uuid.UUID{us[0].ID, us[149].ID, uuid.New()}
		users := map[uuid.UUID]readmodels.User{}
		require.NoError(t, b.Users(ids, users))
		assert.Equal(t, map[uuid.UUID]readmodels.User{us[0].ID: us[0], us[149].ID: us[149]}, users)
		sessions := map[uuid.UUID]readmodels.Session{}
		require.NoError(t, b.Sessions([]uuid.UUID{ss[3].ID}, sessions))
		assert.Equal(t, map[uuid.UUID]readmodels.Session{ss[3].ID: ss[3]}, sessions)
		tokens := map[string]readmodels.TokenRow{}
		require.NoError(t, b.ActivationTokens([]uuid.UUID{us[4].ID}, []string{ts[7].TokenHash}, tokens))
		assert.Equal(t, map[string]readmodels.TokenRow{ts[4].TokenHash: ts[4], ts[7].TokenHash: ts[7]}, tokens)
		return nil
	}))

	if dialect != readmodels.DialectPostgres {
		return
	}
	shadowed := newStore(t, dialect)
	rp2 := shadowed.NewReplay()
	defer rp2.Close()
	var shs []*readmodels.Shadow
	for _, tbl := range readmodels.ProjectionTables {
		sh, err := shadowed.NewShadow(ctx, tbl, tbl)
		require.NoError(t, err)
		shs = append(shs, sh)
	}
	require.NoError(t, rp2.Update(ctx, func(b *readmodels.Bulk) error {
		require.NoError(t, shs[0].Bulk(b).PutUsers(us))
		require.NoError(t, shs[1].Bulk(b).PutSessions(ss))
		require.NoError(t, shs[2].Bulk(b).PutActivationTokens(ts))
		require.NoError(t, shs[3].Bulk(b).InsertAudit(as))
		return nil
	}))
	for _, sh := range shs {
		require.NoError(t, sh.Switch(ctx, func(_ *readmodels.Tx, from, _ eventstore.Position) (eventstore.Position, error) {
			return from, nil
		}))
	}
	got, err := shadowed.Dump(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
