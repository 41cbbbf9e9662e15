package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// pgServer is the PostgreSQL the benchmark uses: one database of its own,
// created at start and dropped at the end, with a fresh schema per run.
type pgServer struct {
	baseURL string // the server, as given
	dbURL   string // the benchmark's database
	dbName  string
	seq     atomic.Int64
}

func openPG(ctx context.Context, base, dbName string) (*pgServer, error) {
	if !regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`).MatchString(dbName) {
		return nil, fmt.Errorf("database name %q: use lower-case letters, digits and underscores", dbName)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		return nil, fmt.Errorf("postgres url: host %q is not loopback; the benchmark only talks to this machine", h)
	}
	s := &pgServer{baseURL: base, dbName: dbName}
	var conn *pgx.Conn
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		if conn, err = pgx.Connect(ctx, base); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redact(base), err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+s.dbName+` WITH (FORCE)`); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+s.dbName); err != nil {
		return nil, err
	}
	u.Path = "/" + s.dbName
	s.dbURL = u.String()
	return s, nil
}

func (s *pgServer) version(ctx context.Context) (string, error) {
	conn, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, `SHOW server_version`).Scan(&v)
	var fs, sc, ws string
	_ = conn.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit'), current_setting('wal_sync_method')`).Scan(&fs, &sc, &ws)
	return fmt.Sprintf("PostgreSQL %s (fsync=%s, synchronous_commit=%s, wal_sync_method=%s)", v, fs, sc, ws), err
}

func (s *pgServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	_, _ = conn.Exec(ctx, `DROP DATABASE IF EXISTS `+s.dbName+` WITH (FORCE)`)
}

// poolTracer, when set (by the round-trip count in roundtrips_test.go),
// traces every statement of the pools the runs open.
var poolTracer pgx.QueryTracer

// pgSchema is one run's fresh schema.
type pgSchema struct {
	srv  *pgServer
	name string
}

func (s *pgServer) freshSchema(ctx context.Context) (*pgSchema, error) {
	name := fmt.Sprintf("run_%d", s.seq.Add(1))
	conn, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+name); err != nil {
		return nil, err
	}
	return &pgSchema{srv: s, name: name}, nil
}

// url is the database URL with this schema as search_path and a pool of
// at most conns connections.
func (sc *pgSchema) url(conns int) string {
	u, _ := url.Parse(sc.srv.dbURL)
	q := u.Query()
	q.Set("search_path", sc.name)
	if conns > 0 {
		q.Set("pool_max_conns", fmt.Sprint(conns))
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// freshPool is a fresh schema with a pool on it; the schema is dropped again
// when the pool cannot be had.
func (s *pgServer) freshPool(ctx context.Context, conns int) (*pgSchema, *pgxpool.Pool, error) {
	sc, err := s.freshSchema(ctx)
	if err != nil {
		return nil, nil, err
	}
	pool, err := sc.pool(ctx, conns)
	if err != nil {
		sc.Drop()
		return nil, nil, err
	}
	return sc, pool, nil
}

func (sc *pgSchema) pool(ctx context.Context, conns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(sc.url(conns))
	if err != nil {
		return nil, err
	}
	if poolTracer != nil {
		cfg.ConnConfig.Tracer = poolTracer
	}
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := p.Ping(ctx); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// sqlDB is a database/sql handle (pgx's stdlib driver) on this schema.
func (sc *pgSchema) sqlDB(conns int) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(sc.url(0))
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

func (sc *pgSchema) Drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, sc.srv.dbURL)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	_, _ = conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+sc.name+` CASCADE`)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// isSerialization is a deadlock or serialization failure.
func isSerialization(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "postgres://…"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxx")
		}
	}
	return strings.TrimSpace(u.String())
}

// waitReady waits (up to two minutes) until the server accepts connections
// again: other work on a shared machine may restart it.
func (s *pgServer) waitReady(ctx context.Context) bool {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, s.dbURL)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return true
		}
		time.Sleep(time.Second)
	}
	return false
}

// outage reports whether err looks like the server went away.
func outage(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "terminating connection", "shutting down", "unexpected EOF",
		"conn closed", "broken pipe", "connection reset", "the database system is"} {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

// startTime identifies the server process; it changes when the server restarts.
func (s *pgServer) startTime(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.dbURL)
	if err != nil {
		return "down"
	}
	defer conn.Close(context.Background())
	var t time.Time
	if err := conn.QueryRow(cctx, `SELECT pg_postmaster_start_time()`).Scan(&t); err != nil {
		return "down"
	}
	return t.String()
}
