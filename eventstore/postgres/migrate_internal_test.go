package postgres

import (
	"context"
	"io/fs"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/internal/pgtest"
)

// A log written before migration 00004 (with its streams table) migrates
// forward: its events stay as they are, appends continue from the versions
// they hold, and the streams table is gone, so that a process still running
// the old append fails instead of checking versions against a table nobody
// keeps any more.
func TestMigratesForwardFromStreamsTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	// The schema as 00003 left it, and a log written there by the old
	// set-based function.
	fsys, err := fs.Sub(migrations, "migrations")
	require.NoError(t, err)
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(versionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.UpTo(ctx, 3)
	require.NoError(t, err)
	old := []eventstore.EventData{event(), event(), event()}
	_, err = pool.Exec(ctx, `SELECT evident_append_set($1::text[], $2::bigint[], $3::bigint[],
		$4::text[], $5::bigint[], $6::uuid[], $7::text[], $8::bytea[], $9::bytea[])`,
		[]string{"a", "b"}, []int64{-1, -1}, []int64{2, 1},
		[]string{"a", "a", "b"}, []int64{1, 2, 1}, []any{old[0].ID, old[1].ID, old[2].ID},
		[]string{"t", "t", "t"}, [][]byte{{}, {}, {}}, [][]byte{{}, {}, {}})
	require.NoError(t, err)

	s, err := New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	var streams *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT to_regclass('streams')::text`).Scan(&streams))
	assert.Nil(t, streams, "the streams table is gone")

	// Both append paths continue from the versions in the log.
	res, err := s.Append(ctx, one("a", 1), one("b", 0))
	require.NoError(t, err)
	assert.Equal(t, []int64{2, 1}, res.Versions)
	calls := []*call{newCall(ctx, one("a", 2)), newCall(ctx, one("a", 3))} // names "a" twice: evident_append
	s.runGroup(s.groupCtx, calls)
	for _, c := range calls {
		require.NoError(t, (<-c.reply).err)
	}
	for _, bad := range []eventstore.AppendRequest{one("a", 3), one("b", eventstore.NoStream)} {
		_, err = s.Append(ctx, bad)
		assert.ErrorIs(t, err, eventstore.ErrWrongVersion, bad.Stream)
	}
	evs, err := s.ReadAll(ctx, eventstore.Position{}, 100)
	require.NoError(t, err)
	require.Len(t, evs, 7)
	for i, e := range old {
		assert.Equal(t, e.ID, evs[i].ID, "the old events stay first, as they were")
	}

	// And back: the Down migration rebuilds the streams table from the log.
	_, err = p.DownTo(context.WithoutCancel(ctx), 3)
	require.NoError(t, err)
	var version int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT version FROM streams WHERE stream = 'a'`).Scan(&version))
	assert.Equal(t, int64(4), version)
}
