package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	_ "modernc.org/sqlite" // registers the "sqlite" driver; pure Go, no cgo
)

// BusyTimeoutMillis is how long a connection waits for another process's lock
// on the file (the CLI may write while a server runs) before SQLITE_BUSY.
const BusyTimeoutMillis = 10000

// ReadMmapBytes is how much of the file the read connections map into
// memory. Every commit empties a reader's page cache (WAL mode), so without
// the map each read copies every page it touches in with a system call; a
// stream read that meets a page per event paid one pread per event. Only
// reads map the file: writes still go through write(2) and its fsync.
const ReadMmapBytes = 256 << 20

// DB is one SQLite file opened as two pools: Write for every statement that
// changes the file, Read for queries. Writers in one process queue in Go
// behind Write's single connection, so they never meet SQLITE_BUSY from each
// other; readers run beside them thanks to WAL.
type DB struct {
	// Write has exactly one connection; its transactions begin IMMEDIATE so a
	// transaction that reads before it writes cannot fail on lock upgrade.
	Write *sql.DB
	// Read has several query_only connections.
	Read *sql.DB
	// Path is the absolute path of the file.
	Path string
}

// Open opens (creating it and its parent directory when missing) the SQLite
// file at path. The write pool uses WAL, synchronous=FULL (a committed audit
// event must survive power loss, not only a crash), foreign keys and a busy
// timeout; the read pool is query_only with the same busy timeout. Open pings
// both pools, so a path that cannot be opened fails here rather than at first
// use. Read connections map the file (ReadMmapBytes).
func Open(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlitedb: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: resolve %q: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("sqlitedb: create directory for %q: %w", abs, err)
	}

	write, err := sql.Open("sqlite", dsn(abs,
		"busy_timeout", fmt.Sprint(BusyTimeoutMillis),
		"journal_mode", "WAL",
		"synchronous", "FULL",
		"foreign_keys", "1",
	)+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlitedb: open write pool %q: %w", abs, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxIdleTime(0)
	write.SetConnMaxLifetime(0)
	// The write connection must exist first: it switches the file to WAL,
	// which is persistent, before any reader opens it.
	if err := write.PingContext(context.Background()); err != nil {
		return nil, errors.Join(fmt.Errorf("sqlitedb: open %q: %w", abs, err), write.Close())
	}

	read, err := sql.Open("sqlite", dsn(abs,
		"busy_timeout", fmt.Sprint(BusyTimeoutMillis),
		"foreign_keys", "1",
		"query_only", "1",
		"mmap_size", fmt.Sprint(ReadMmapBytes),
	))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("sqlitedb: open read pool %q: %w", abs, err), write.Close())
	}
	n := max(4, runtime.NumCPU())
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	if err := read.PingContext(context.Background()); err != nil {
		return nil, errors.Join(fmt.Errorf("sqlitedb: open %q for reading: %w", abs, err), read.Close(), write.Close())
	}
	return &DB{Write: write, Read: read, Path: abs}, nil
}

// Close closes both pools. In WAL mode, closing the last connection
// checkpoints the log into the main file.
func (db *DB) Close() error {
	// Readers first, so the writer's close is the last one and checkpoints.
	return errors.Join(db.Read.Close(), db.Write.Close())
}

// dsn builds a file: URI for modernc.org/sqlite with one _pragma per
// name/value pair. The path is escaped, so names with '?' or '#' work.
func dsn(abs string, pragmas ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(pragmas); i += 2 {
		q.Add("_pragma", pragmas[i]+"("+pragmas[i+1]+")")
	}
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") { // a Windows drive letter
		p = "/" + p
	}
	u := url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}
	return u.String()
}
