package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
)

var runSeq atomic.Int64

// httpLoad keeps conns loopback connections busy with POST /v1/users for
// d and returns acknowledged registrations per second. async asks Evident
// not to wait for its read models (Prefer: respond-async).
func httpLoad(ctx context.Context, addr string, conns int, d time.Duration, async bool) measure {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	run := runSeq.Add(1)
	var accepted atomic.Int64
	rate, c := drive(ctx, conns, d, func(ctx context.Context, w int, rng *rand.Rand, c *counters) {
		body := fmt.Appendf(nil, `{"email":"r%d-w%d-%d@example.com","name":"Bench User %d"}`, run, w, rng.Uint64(), w)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/users", bytes.NewReader(body))
		if err != nil {
			c.fail(err)
			return
		}
		req.Header.Set("Content-Type", "application/json")
		if async {
			req.Header.Set("Prefer", "respond-async")
		}
		resp, err := client.Do(req)
		if err != nil {
			c.fail(err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			c.ops.Add(1)
		case http.StatusAccepted: // stored; the read models were late
			c.ops.Add(1)
			accepted.Add(1)
		default:
			c.fail(fmt.Errorf("HTTP %d: %s", resp.StatusCode, trim(string(b), 200)))
		}
	})
	m := c.measure(rate)
	if n := accepted.Load(); n > 0 {
		m.Note = fmt.Sprintf("%d answered 202 (read models later than 5 s)", n)
	}
	return m
}

// scenarioHTTP: register-user over HTTP against the real API, next to an
// echo handler that decodes the same body and runs one INSERT.
func scenarioHTTP(ctx context.Context, p profile, w where, backend string, conns int, logf logger) []row {
	evident := func(async bool) func(ctx context.Context) measure {
		return func(ctx context.Context) measure {
			a, err := openApp(ctx, w, backend, conns+8)
			if err != nil {
				return measure{Err: err}
			}
			defer a.Close()
			if err := a.start(true); err != nil {
				return measure{Err: err}
			}
			return httpLoad(ctx, a.addr, conns, p.dur, async)
		}
	}
	raw := func(ctx context.Context) measure {
		srv, err := openEchoInsert(ctx, w, backend, conns)
		if err != nil {
			return measure{Err: err}
		}
		defer srv.Close()
		return httpLoad(ctx, srv.addr, conns, p.dur, false)
	}
	cs := []contender{
		{"evident", roleEvident, evident(false)},
		{"raw echo+INSERT", roleRaw, raw},
	}
	if p.httpAsync {
		cs = append(cs, contender{"evident respond-async", rolePeer, evident(true)})
	}
	label := fmt.Sprintf("%s HTTP register ×%d", backend, conns)
	res := interleave(ctx, label, p.rounds, cs, logf)
	r := row{
		ID: fmt.Sprintf("%s/http/%d", backend, conns), Section: backend + " HTTP",
		Name:    fmt.Sprintf("register user over HTTP (POST /v1/users, waits for read models), %d connection%s", conns, plural(conns)),
		Unit:    "req/s",
		Target:  target{Text: "≥ 0.7× echo+INSERT", MinRaw: 0.7},
		Evident: res["evident"], Raw: res["raw echo+INSERT"], RawName: "raw echo+INSERT",
	}
	out := []row{r}
	if p.httpAsync {
		ra := row{
			ID: fmt.Sprintf("%s/http-async/%d", backend, conns), Section: backend + " HTTP",
			Name:    fmt.Sprintf("register user over HTTP with Prefer: respond-async, %d connection%s", conns, plural(conns)),
			Unit:    "req/s",
			Target:  target{Text: "≥ 0.7× echo+INSERT (not required; shown)", MinRaw: 0.7},
			Evident: res["evident respond-async"], Raw: res["raw echo+INSERT"], RawName: "raw echo+INSERT",
		}
		out = append(out, ra)
	}
	return out
}

// echoInsert is the ceiling for one HTTP command: the same web framework
// (labstack/echo), the same JSON body, one durable INSERT, a JSON answer.
type echoInsert struct {
	addr  string
	srv   *http.Server
	close []func()
}

func (e *echoInsert) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = e.srv.Shutdown(ctx)
	cancel()
	for i := len(e.close) - 1; i >= 0; i-- {
		e.close[i]()
	}
}

type registerBody struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

func openEchoInsert(ctx context.Context, w where, backend string, conns int) (*echoInsert, error) {
	e := &echoInsert{}
	var insert func(ctx context.Context, id uuid.UUID, b registerBody) error
	switch backend {
	case "PostgreSQL":
		sc, err := w.pg.freshSchema(ctx)
		if err != nil {
			return nil, err
		}
		e.close = append(e.close, sc.Drop)
		pool, err := sc.pool(ctx, conns)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.close = append(e.close, pool.Close)
		if _, err := pool.Exec(ctx, `CREATE TABLE raw_users (id uuid PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, created_at timestamptz NOT NULL)`); err != nil {
			e.Close()
			return nil, err
		}
		insert = pgInsertUser(pool)
	default:
		dir, err := os.MkdirTemp(w.tmp, "echo-*")
		if err != nil {
			return nil, err
		}
		e.close = append(e.close, func() { os.RemoveAll(dir) })
		db, err := openSQLite(filepath.Join(dir, "raw.db"), 1, true)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.close = append(e.close, func() { db.Close() })
		if _, err := db.ExecContext(ctx, `CREATE TABLE raw_users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_at TEXT NOT NULL)`); err != nil {
			e.Close()
			return nil, err
		}
		insert = sqliteInsertUser(db)
	}
	ec := echo.New()
	ec.HideBanner, ec.HidePort = true, true
	ec.POST("/v1/users", func(c echo.Context) error {
		var b registerBody
		if err := c.Bind(&b); err != nil {
			return err
		}
		if b.Email == "" || b.Name == "" {
			return echo.NewHTTPError(http.StatusUnprocessableEntity, "email and name are required")
		}
		id := uuid.Must(uuid.NewV7())
		if err := insert(c.Request().Context(), id, b); err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, map[string]any{"id": id, "email": b.Email, "name": b.Name, "status": "pending"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.srv = &http.Server{}
		e.Close()
		return nil, err
	}
	e.addr = ln.Addr().String()
	e.srv = &http.Server{Handler: ec, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "bench: echo serve:", err)
		}
	}()
	return e, nil
}

func pgInsertUser(pool *pgxpool.Pool) func(context.Context, uuid.UUID, registerBody) error {
	return func(ctx context.Context, id uuid.UUID, b registerBody) error {
		_, err := pool.Exec(ctx, `INSERT INTO raw_users (id, email, name, created_at) VALUES ($1, $2, $3, now())`, id, b.Email, b.Name)
		return err
	}
}

func sqliteInsertUser(db *sql.DB) func(context.Context, uuid.UUID, registerBody) error {
	return func(ctx context.Context, id uuid.UUID, b registerBody) error {
		_, err := db.ExecContext(ctx, `INSERT INTO raw_users (id, email, name, created_at) VALUES ($1, $2, $3, $4)`,
			id.String(), b.Email, b.Name, time.Now().UTC().Format(time.RFC3339Nano))
		return err
	}
}
