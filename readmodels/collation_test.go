package readmodels_test

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

// collateC are the PostgreSQL read-model columns that compare byte by byte
// (migration 00004): identifiers that indexes and ORDER BY compare.
var collateC = []string{
	"activation_tokens.status", "activation_tokens.token_hash", "activation_tokens.user_id",
	"audit.action", "audit.actor_id", "audit.event_id", "audit.user_id",
	"checkpoints.name",
	"credentials.id", "credentials.user_id",
	"idempotency_keys.key", "idempotency_keys.scope",
	"parked_events.event_id", "parked_events.projection",
	"sessions.id", "sessions.status", "sessions.user_id",
	"users.email", "users.id", "users.status",
}

// textCollations returns table.column → collation ("default" for the
// database's) of every text column of the tables in the current schema.
func textCollations(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT table_name || '.' || column_name, coalesce(collation_name, 'default')
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND data_type = 'text' AND table_name NOT LIKE 'goose%'`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var col, coll string
		require.NoError(t, rows.Scan(&col, &coll))
		out[col] = coll
	}
	require.NoError(t, rows.Err())
	return out
}

// collatedC returns the columns of cols whose collation is "C", sorted.
func collatedC(cols map[string]string, table string) []string {
	var out []string
	for col, coll := range cols {
		if coll == "C" && (table == "" || strings.HasPrefix(col, table+".")) {
			out = append(out, col)
		}
	}
	return out
}

// The identifier columns compare byte by byte, and every other text column
// (users.name above all, which people read) keeps the database's collation.
// A rebuild's shadow tables copy the collations, the queries' shapes still
// search through the indexes, and the migration goes down and up again
// over rows that stay readable.
func TestIdentifierColumnsCollateC(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in := instances(t, 1)[0]
	rm := in.rm
	db := openPostgres(t, in.url, "")

	cols := textCollations(t, db)
	assert.ElementsMatch(t, collateC, collatedC(cols, ""))
	assert.Equal(t, "default", cols["users.name"])

	u := mkUser("Zoë", 1)
	u.Roles = []string{} // as read back
	update(t, rm, func(tx *readmodels.Tx) error { return tx.PutUser(u) })

	// A rebuild's shadow tables are LIKE … INCLUDING ALL copies: the same
	// collations, and a switch leaves them on the live names.
	sh, err := rm.NewShadow(ctx, "all", readmodels.ProjectionTables...)
	require.NoError(t, err)
	cols = textCollations(t, db)
	for _, table := range readmodels.ProjectionTables {
		var shadowed []string
		for _, col := range collatedC(cols, table+readmodels.ShadowSuffix) {
			shadowed = append(shadowed, strings.Replace(col, readmodels.ShadowSuffix+".", ".", 1))
		}
		assert.ElementsMatch(t, collatedC(cols, table), shadowed, table)
	}
	require.NoError(t, sh.DeferIndexes(ctx))
	update(t, rm, func(tx *readmodels.Tx) error {
		if err := sh.Tx(tx).PutUser(u); err != nil {
			return err
		}
		return tx.SetCheckpoint(sh.Name(), eventstore.At(1))
	})
	require.NoError(t, sh.Switch(ctx, func(_ *readmodels.Tx, from, _ eventstore.Position) (eventstore.Position, error) {
		return from, nil
	}))
	assert.ElementsMatch(t, collateC, collatedC(textCollations(t, db), ""), "after a rebuild")
	got, err := rm.Users(ctx, readmodels.UserFilter{Email: u.Email, Status: "pending"})
	require.NoError(t, err)
	require.Len(t, got.Items, 1)
	assert.Equal(t, u.ID, got.Items[0].ID)

	sessionID, hash := uuid.New(), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	update(t, rm, func(tx *readmodels.Tx) error {
		if err := tx.PutSession(readmodels.Session{ID: sessionID, UserID: u.ID, Status: "open",
			CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Version: 1}); err != nil {
			return err
		}
		if err := tx.InsertActivationToken(readmodels.ActivationToken{TokenHash: hash, UserID: u.ID, Status: "pending",
			RequestedBy: "system", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, 1); err != nil {
			return err
		}
		return tx.InsertAudit(readmodels.AuditRecord{EventID: uuid.New(), EventType: "user.created", AggregateID: u.ID.String(),
			AggregateType: "user", UserID: &u.ID, ActorID: "system", Action: "user_created", Resource: "user",
			ResourceID: u.ID.String(), OccurredAt: t0, Position: eventstore.At(1)})
	})

	// The shapes of queries.go and of Bulk's lookups search through the
	// indexes. Sequential scans are priced out, for the tables are tiny.
	conn, err := db.Conn(ctx)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(ctx, `SET enable_seqscan = off`)
	require.NoError(t, err)
	// A column compared in another collation than its index's is no
	// Index Cond but a Filter over the whole index: the plans must search.
	for q, want := range map[string]string{
		`SELECT * FROM audit WHERE user_id = $1 ORDER BY pos_commit, pos_prepare LIMIT 51`:                 `audit_user_pos .*\n.*Index Cond: \(+user_id = `,
		`SELECT * FROM audit WHERE actor_id = $1 ORDER BY pos_commit DESC, pos_prepare DESC LIMIT 51`:      `audit_actor_pos .*\n.*Index Cond: \(+actor_id = `,
		`SELECT * FROM audit WHERE action = $1 AND (pos_commit, pos_prepare) > (1, 1) ORDER BY pos_commit`: `audit_action_pos .*\n.*Index Cond: \(+action = `,
		`SELECT * FROM users WHERE email = $1 ORDER BY id LIMIT 51`:                                        `users_email_id .*\n.*Index Cond: \(+email = `,
		`SELECT * FROM users WHERE status = $1 AND id > $1 ORDER BY id LIMIT 51`:                           `users_status_id .*\n.*Index Cond: \(+status = .* AND \(id > `,
		`SELECT * FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 51`:             `sessions_user_created .*\n.*Index Cond: \(+user_id = `,
		`SELECT * FROM activation_tokens WHERE user_id = $1 ORDER BY created_at DESC, token_hash DESC`:     `activation_tokens_user_created .*\n.*Index Cond: \(+user_id = `,
		`SELECT * FROM activation_tokens WHERE token_hash = ANY($1::text[])`:                               `Index Cond: \(+token_hash = ANY`,
		`SELECT * FROM users WHERE id = ANY('{` + u.ID.String() + `}')`:                                    `Index Cond: \(+id = ANY`,
		`SELECT position FROM checkpoints WHERE name = $1`:                                                 `checkpoints_pkey .*\n.*Index Cond: \(+name = `,
	} {
		var arg any = "x"
		if strings.Contains(q, "$1::text[]") {
			arg = "{" + hash + "}"
		} else if !strings.Contains(q, "$1") {
			arg = nil
		}
		var args []any
		if arg != nil {
			args = []any{arg}
		}
		rows, err := conn.QueryContext(ctx, `EXPLAIN `+q, args...)
		require.NoError(t, err, q)
		var plan []string
		for rows.Next() {
			var line string
			require.NoError(t, rows.Scan(&line))
			plan = append(plan, line)
		}
		require.NoError(t, rows.Err())
		assert.Regexp(t, want, strings.Join(plan, "\n"), q)
		assert.NotContains(t, strings.Join(plan, "\n"), "Filter", q)
	}
	require.NoError(t, conn.Close())

	// Down and up again: the collations go and come back, the rows stay.
	p, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("migrations/postgres"),
		goose.WithTableName(readmodels.VersionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.DownTo(ctx, 3)
	require.NoError(t, err)
	assert.Empty(t, collatedC(textCollations(t, db), ""))
	_, err = p.Up(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, collateC, collatedC(textCollations(t, db), ""))

	fresh := openPostgres(t, in.url, "") // no statements prepared before the migrations
	rm2, err := readmodels.Open(ctx, readmodels.DialectPostgres, fresh, fresh)
	require.NoError(t, err)
	got, err = rm2.Users(ctx, readmodels.UserFilter{Email: u.Email})
	require.NoError(t, err)
	require.Len(t, got.Items, 1)
	assert.Equal(t, u, got.Items[0])
	sessions, err := rm2.Sessions(ctx, u.ID, "", "", 0)
	require.NoError(t, err)
	require.Len(t, sessions.Items, 1)
	assert.Equal(t, sessionID, sessions.Items[0].ID)
	cp, err := rm2.Checkpoint(ctx, "all"+readmodels.ShadowSuffix)
	require.NoError(t, err)
	assert.Equal(t, eventstore.Position{}, cp, "the switch removed the shadow's checkpoint")
}
