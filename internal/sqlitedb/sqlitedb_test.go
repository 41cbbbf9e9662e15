package sqlitedb_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/internal/sqlitedb"
)

func pragma[T any](t *testing.T, db *sql.DB, name string) T {
	t.Helper()
	var v T
	require.NoError(t, db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v))
	return v
}

func TestOpenCreatesDirectoryAndSetsPragmas(t *testing.T) {
	t.Parallel()
	// A name SQLite's URI parser would misread if it were not escaped.
	path := filepath.Join(t.TempDir(), "nested", "dir", "evi dent?#%.db")

	db, err := sqlitedb.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })

	assert.Equal(t, path, db.Path)
	_, err = os.Stat(path)
	require.NoError(t, err, "the file is created at the exact path")

	assert.Equal(t, "wal", pragma[string](t, db.Write, "journal_mode"))
	assert.Equal(t, 2, pragma[int](t, db.Write, "synchronous"), "FULL")
	assert.Equal(t, 10000, pragma[int](t, db.Write, "busy_timeout"))
	assert.Equal(t, 1, pragma[int](t, db.Write, "foreign_keys"))
	assert.Equal(t, 0, pragma[int](t, db.Write, "query_only"))
	assert.Equal(t, 1, db.Write.Stats().MaxOpenConnections)

	assert.Equal(t, "wal", pragma[string](t, db.Read, "journal_mode"))
	assert.Equal(t, 1, pragma[int](t, db.Read, "query_only"))
	assert.Equal(t, 10000, pragma[int](t, db.Read, "busy_timeout"))
	assert.Equal(t, sqlitedb.ReadMmapBytes, pragma[int](t, db.Read, "mmap_size"), "reads map the file")
	assert.Equal(t, 0, pragma[int](t, db.Write, "mmap_size"), "writes do not")
	assert.Greater(t, db.Read.Stats().MaxOpenConnections, 1)
}

func TestReadPoolIsReadOnlyAndSeesCommittedWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "x.db"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })

	_, err = db.Write.ExecContext(ctx, `CREATE TABLE t (v INTEGER NOT NULL)`)
	require.NoError(t, err)
	_, err = db.Write.ExecContext(ctx, `INSERT INTO t (v) VALUES ($1)`, 42)
	require.NoError(t, err)

	var v int
	require.NoError(t, db.Read.QueryRowContext(ctx, `SELECT v FROM t`).Scan(&v))
	assert.Equal(t, 42, v)

	_, err = db.Read.ExecContext(ctx, `INSERT INTO t (v) VALUES (1)`)
	assert.Error(t, err, "the read pool is query_only")
}

// TestWriteTransactionsBeginImmediate checks _txlock=immediate: a write
// transaction holds the write lock from BEGIN, so another connection (as
// another process would) cannot start writing until it ends.
func TestWriteTransactionsBeginImmediate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "x.db"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, db.Close()) })
	_, err = db.Write.ExecContext(ctx, `CREATE TABLE t (v INTEGER)`)
	require.NoError(t, err)

	tx, err := db.Write.BeginTx(ctx, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback() })

	other, err := sql.Open("sqlite", db.Path+"?_pragma=busy_timeout(0)&_txlock=immediate")
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, other.Close()) })
	otherTx, err := other.BeginTx(ctx, nil)
	if err == nil {
		_ = otherTx.Rollback()
	}
	require.Error(t, err, "BEGIN IMMEDIATE elsewhere must see our lock")
	assert.Contains(t, err.Error(), "SQLITE_BUSY")

	require.NoError(t, tx.Rollback())
	otherTx, err = other.BeginTx(ctx, nil)
	require.NoError(t, err, "the lock is gone once our transaction ends")
	require.NoError(t, otherTx.Rollback())
}

func TestOpenRejectsEmptyPath(t *testing.T) {
	t.Parallel()
	_, err := sqlitedb.Open("")
	assert.Error(t, err)
}
