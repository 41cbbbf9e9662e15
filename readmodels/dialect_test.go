package readmodels_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"

	"evident/internal/pgtest"
	"evident/internal/sqlitedb"
	"evident/readmodels"
)

// eachDialect runs test on SQLite and on PostgreSQL.
func eachDialect(t *testing.T, test func(t *testing.T, dialect string)) {
	t.Helper()
	pgtest.EachDialect(t, test)
}

// newStore opens a migrated Store on a fresh database of the dialect: a
// SQLite file, or a PostgreSQL schema of its own.
func newStore(t *testing.T, dialect string, opts ...readmodels.Option) *readmodels.Store {
	t.Helper()
	var write, read *sql.DB
	switch dialect {
	case readmodels.DialectSQLite:
		db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "rm.db"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = db.Close() })
		write, read = db.Write, db.Read
	case readmodels.DialectPostgres:
		write = openPostgres(t, pgtest.URL(t), "")
		read = write
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	rm, err := readmodels.Open(context.Background(), dialect, write, read, opts...)
	require.NoError(t, err)
	require.NoError(t, rm.Migrate(context.Background()))
	return rm
}

// openPostgres opens url as production does: a pgx pool behind
// database/sql. A non-empty appName tags the pool's sessions, so that a
// test can find and end them.
func openPostgres(t *testing.T, url, appName string) *sql.DB {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	cfg.MaxConns = 6
	if appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	return db
}
