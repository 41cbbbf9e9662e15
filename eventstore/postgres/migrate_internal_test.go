package postgres

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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
	p := migrator(t, pool)
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

// Stream names compare byte by byte (migration 00005): the column's
// collation is "C", the (stream, version) index still serves every
// statement that searches it by stream, and the migration goes down and up
// again over a log that keeps its events and versions.
func TestStreamCollationIsC(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.URL(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })

	collation := func() string {
		t.Helper()
		var c *string
		require.NoError(t, pool.QueryRow(ctx, `SELECT collation_name FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = 'events' AND column_name = 'stream'`).Scan(&c))
		if c == nil {
			return "default"
		}
		return *c
	}
	assert.Equal(t, "C", collation())

	streams := []string{"user-b", "user-A", "user-é"}
	for _, st := range streams {
		_, err := s.Append(ctx, one(st, eventstore.NoStream), one(st+"x", eventstore.NoStream))
		require.NoError(t, err)
	}

	// Every statement that looks a stream up searches the index by it: a
	// stream compared in another collation than the index's would be no
	// Index Cond but a Filter over the whole index. Sequential scans are
	// priced out, for the table is tiny.
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET enable_seqscan = off`)
	require.NoError(t, err)
	a := buildSetArgs([]*call{newCall(ctx, one("user-b", 0)), newCall(ctx, one("user-c", eventstore.NoStream))})
	require.NotNil(t, a)
	for name, q := range map[string]struct {
		sql  string
		args []any
	}{
		"read stream":            {selectEvents + ` WHERE stream = $1 AND version >= $2 ORDER BY version`, []any{"user-b", int64(0)}},
		"append set":             {appendSet, []any{a.stream, a.expected, a.offset, a.id, a.typ, a.data, a.meta, a.locks}},
		"append each":            {appendEach, []any{a.stream, a.expected, a.id, a.typ, a.data, a.meta, a.locks}},
		"evident_append's check": {`SELECT max(e.version) FROM events AS e WHERE e.stream = ($1::text[])[1]`, []any{[]string{"user-b"}}},
		"missed": {`SELECT (SELECT max(e.version) FROM events AS e WHERE e.stream = m.stream)
			FROM unnest($1::text[]) WITH ORDINALITY AS m(stream, i) ORDER BY m.i`, []any{[]string{"user-b"}}},
	} {
		rows, err := conn.Query(ctx, `EXPLAIN `+q.sql, q.args...)
		require.NoError(t, err, name)
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err, name)
		plan := strings.Join(lines, "\n")
		t.Logf("%s:\n%s", name, plan)
		assert.Regexp(t, `events_stream_version_key .*\n.*Index Cond: \(+(x\.|e\.)?stream = `, plan, name)
		assert.NotContains(t, plan, "Seq Scan on events", name)
		assert.NotRegexp(t, `Filter: .*stream =`, plan, name)
	}
	conn.Release()

	p := migrator(t, pool)
	_, err = p.DownTo(ctx, 4)
	require.NoError(t, err)
	assert.Equal(t, "default", collation())
	_, err = p.Up(ctx)
	require.NoError(t, err)
	assert.Equal(t, "C", collation())

	// A store opened after the round trip reads and appends as before.
	pool2, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool2.Close)
	s2, err := New(ctx, pool2)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s2.Close()) })
	for _, st := range streams {
		evs, err := s2.ReadStream(ctx, st, 0)
		require.NoError(t, err)
		require.Len(t, evs, 1, st)
		res, err := s2.Append(ctx, one(st, 0))
		require.NoError(t, err)
		assert.Equal(t, []int64{1}, res.Versions, st)
		_, err = s2.Append(ctx, one(st, 0))
		assert.ErrorIs(t, err, eventstore.ErrWrongVersion, st)
	}
}

// migrator is the store's own goose provider on pool, to move the schema
// to a given version.
func migrator(t *testing.T, pool *pgxpool.Pool) *goose.Provider {
	t.Helper()
	fsys, err := fs.Sub(migrations, "migrations")
	require.NoError(t, err)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(versionTable), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	return p
}
