// Package pgtest gives tests an isolated PostgreSQL schema on the server named by
// EVIDENT_TEST_DATABASE_URL. It is test support only: nothing outside _test.go files
// should import it.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EnvURL names the server tests run against; EnvRequire, when "1", turns a missing
// server into a failure instead of a skip (CI sets it).
const (
	EnvURL     = "EVIDENT_TEST_DATABASE_URL"
	EnvRequire = "EVIDENT_TEST_REQUIRE_POSTGRES"
)

const missing = "PostgreSQL tests need " + EnvURL + " (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)"

// URL creates a fresh schema and returns a connection string whose search_path is that
// schema, so every connection opened from it (pgx or database/sql via pgx's stdlib)
// creates and finds its tables there. The schema is dropped with CASCADE in t.Cleanup.
//
// Without EVIDENT_TEST_DATABASE_URL the test is skipped, or fails when
// EVIDENT_TEST_REQUIRE_POSTGRES=1.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}

	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("pgtest: random schema name: %v", err)
	}
	schema := "t_" + hex.EncodeToString(b[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", EnvURL, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("pgtest: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(context.Background())
		// A server the test killed may leave backends running a statement
		// until they notice; the drop can then lose a deadlock to one of
		// them, which is ended by the same detector: try again.
		for try := 1; ; try++ {
			_, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
			var pgErr *pgconn.PgError
			if err != nil && try < 5 && errors.As(err, &pgErr) && pgErr.Code == "40P01" {
				continue
			}
			if err != nil {
				t.Errorf("pgtest: drop schema %s: %v", schema, err)
			}
			return
		}
	})

	u, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", EnvURL, err)
	}
	return u
}

// withSearchPath sets search_path in a URL-form connection string.
func withSearchPath(base, schema string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("want a postgres:// URL, got scheme %q", u.Scheme)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
