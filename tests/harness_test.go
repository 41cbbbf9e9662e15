// Package tests holds Evident's black-box tests: they build the real binary,
// start it on a fresh data directory and speak HTTP to it, nothing else.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"evident/internal/pgtest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Credentials of the admin every test server bootstraps.
const (
	adminEmail    = "admin@example.test"
	adminPassword = "admin-password-1"
	userPassword  = "user-password-1"
)

// binPath is the evident binary TestMain builds once for the whole package.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "evident-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests: module root:", err)
		return 1
	}
	binPath = filepath.Join(dir, "evident")
	build := exec.Command("go", "build", "-o", binPath, "./cmd/evident")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tests: go build ./cmd/evident: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// Option changes how startServer runs the binary.
type Option func(*serverConfig)

type serverConfig struct {
	dataDir     string
	databaseURL string
	env         []string
}

// WithDataDir starts the server on an existing data directory.
func WithDataDir(dir string) Option { return func(c *serverConfig) { c.dataDir = dir } }

// WithDatabaseURL starts the server on the given PostgreSQL database (its
// EVIDENT_DATABASE_URL), e.g. one several servers share, whatever
// EVIDENT_TEST_STORE says.
func WithDatabaseURL(u string) Option { return func(c *serverConfig) { c.databaseURL = u } }

// EnvTestStore selects the stores every test server runs on: "sqlite" (the
// default, a fresh data directory each) or "postgres" (a fresh schema each on
// the server named by EVIDENT_TEST_DATABASE_URL, see internal/pgtest).
const EnvTestStore = "EVIDENT_TEST_STORE"

// onPostgres reports whether test servers run on PostgreSQL.
func onPostgres() bool { return os.Getenv(EnvTestStore) == "postgres" }

// skipOnPostgres skips a test whose subject only exists on the embedded store.
func skipOnPostgres(t testing.TB, why string) {
	t.Helper()
	if onPostgres() {
		t.Skip("SQLite only: " + why)
	}
}

// freshDatabaseURL is a new, empty PostgreSQL schema for one test, dropped when
// the test ends. It skips the test when no server is configured, except that
// EVIDENT_TEST_STORE=postgres turns the missing server into a failure: a
// suite asked to run on PostgreSQL must not quietly skip instead.
func freshDatabaseURL(t testing.TB) string {
	t.Helper()
	if onPostgres() && os.Getenv(pgtest.EnvURL) == "" {
		t.Fatalf("%s=postgres needs %s (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)", EnvTestStore, pgtest.EnvURL)
	}
	return pgtest.URL(t)
}

// WithEnv adds "KEY=VALUE" entries to the server's environment.
func WithEnv(kv ...string) Option { return func(c *serverConfig) { c.env = append(c.env, kv...) } }

// Server is one running `evident serve` process.
type Server struct {
	URL     string // http://127.0.0.1:<port>
	DataDir string
	// DatabaseURL is the PostgreSQL database (schema) the server keeps events
	// and read models in; empty on the embedded SQLite store.
	DatabaseURL string
	AdminToken  string
	AdminID     string

	addr    string
	env     []string
	logPath string
	client  *http.Client

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	exitErr error         // how cmd exited, once done is closed
	runs    int
}

// startServer starts evident serve on a fresh (or the given) data directory
// and a free loopback port, waits until it is ready and logs the admin in.
// With EVIDENT_TEST_STORE=postgres it runs on a fresh PostgreSQL schema instead
// (kept across Restart; CLI uses it too). The process is killed when the test
// ends; its output is shown on failure.
func startServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	s := newServer(t, opts...)
	s.start(t)
	return s
}

// newServer prepares what startServer starts: the stores, a port, the
// cleanup. It starts no process.
func newServer(t *testing.T, opts ...Option) *Server {
	t.Helper()
	var cfg serverConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dataDir == "" {
		cfg.dataDir = t.TempDir()
	}
	if cfg.databaseURL == "" && onPostgres() {
		cfg.databaseURL = freshDatabaseURL(t)
	}
	env := cfg.env
	if cfg.databaseURL != "" {
		// First, so that a WithEnv naming other stores still wins.
		env = append([]string{"EVIDENT_DATABASE_URL=" + cfg.databaseURL}, env...)
	}
	logDir := t.TempDir()
	s := &Server{
		DataDir:     cfg.dataDir,
		DatabaseURL: cfg.databaseURL,
		env:         env,
		logPath:     filepath.Join(logDir, "server.log"),
		client:      &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	s.addr = freeAddr(t)
	s.URL = "http://" + s.addr
	t.Cleanup(func() {
		s.Kill()
		if t.Failed() {
			t.Logf("server output (%s):\n%s", s.logPath, tail(s.logPath, 200))
		}
	})
	return s
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func (s *Server) start(t *testing.T) {
	t.Helper()
	if err := s.launch(); err != nil {
		// Another test may have taken the port while this server was down.
		if !strings.Contains(err.Error(), "address already in use") {
			require.FailNow(t, err.Error())
		}
		s.addr = freeAddr(t)
		s.URL = "http://" + s.addr
		require.NoError(t, s.launch())
	}
	s.loginAdmin(t)
}

// loginAdmin logs the bootstrap admin in: AdminToken, AdminID.
func (s *Server) loginAdmin(t *testing.T) {
	t.Helper()
	tok, _ := s.Login(t, adminEmail, adminPassword)
	s.AdminToken = tok
	me := s.Do(t, http.MethodGet, "/v1/users?email="+url.QueryEscape(adminEmail), tok, nil)
	require.Equal(t, http.StatusOK, me.Status, "find admin: %s", me.Body)
	var page struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	me.Decode(t, &page)
	require.Len(t, page.Items, 1, "admin row")
	s.AdminID = page.Items[0].ID
}

// launch starts the process and waits until /readyz answers 200.
func (s *Server) launch() error {
	done, err := s.spawn()
	if err != nil {
		return err
	}
	return s.waitReady(done)
}

// spawn starts the process and returns at once; done is closed when it exits.
func (s *Server) spawn() (<-chan struct{}, error) {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.runs++
	fmt.Fprintf(logf, "=== start %d on %s\n", s.runs, s.addr)
	s.mu.Unlock()

	cmd := exec.Command(binPath, "serve")
	cmd.Env = append(os.Environ(),
		"EVIDENT_DATA_DIR="+s.DataDir,
		"EVIDENT_HTTP_ADDR="+s.addr,
		"EVIDENT_BOOTSTRAP_ADMIN_EMAIL="+adminEmail,
		"EVIDENT_BOOTSTRAP_ADMIN_PASSWORD="+adminPassword,
		"EVIDENT_PASSWORD_COST=4",
		"EVIDENT_LOG_LEVEL=info",
	)
	cmd.Env = append(cmd.Env, s.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logf.Close()
		s.mu.Lock()
		s.exitErr = err
		s.mu.Unlock()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	return done, nil
}

func (s *Server) waitReady(done <-chan struct{}) error {
	deadline := time.Now().Add(30 * time.Second)
	c := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("evident serve exited before it was ready; output:\n%s", tail(s.logPath, 100))
		default:
		}
		resp, err := c.Get(s.URL + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		time.Sleep(25 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("evident serve was not ready within 30s; last /readyz: %s\noutput:\n%s", last, tail(s.logPath, 100))
}

// Kill sends SIGKILL and waits until the process is gone.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 0) }

// Stop sends SIGTERM and waits for a clean exit (SIGKILL after 30s).
func (s *Server) Stop() { s.signal(syscall.SIGTERM, 30*time.Second) }

func (s *Server) signal(sig syscall.Signal, grace time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	<-done
	s.client.CloseIdleConnections()
}

// Restart stops a running process (SIGTERM) and starts serve again on the
// same data directory and port (a new port if that one was taken meanwhile;
// URL follows), refreshing AdminToken.
func (s *Server) Restart(t *testing.T) {
	t.Helper()
	s.Stop()
	s.start(t)
}

// ExitErr is how the last process exited (nil for status 0); call it after
// Stop or Kill.
func (s *Server) ExitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exitErr
}

// Running reports whether the process is still alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Response is an HTTP answer, read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as one JSON object.
func (r *Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.Body, &m), "status %d body %q", r.Status, r.Body)
	return m
}

// Decode decodes the body into v.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(r.Body, v), "status %d body %q", r.Status, r.Body)
}

// String is for failure messages.
func (r *Response) String() string { return fmt.Sprintf("%d %s", r.Status, r.Body) }

// Do sends one request and reads the answer; a transport error fails the test.
// body may be nil, []byte or string (sent as is), an io.Reader (sent chunked,
// without Content-Length), or anything else (sent as JSON). A body gets Content-Type: application/json unless header (pairs of
// name, value) sets it; an empty value removes a header.
func (s *Server) Do(t testing.TB, method, path, token string, body any, header ...string) *Response {
	t.Helper()
	r, err := s.Try(method, path, token, body, header...)
	require.NoError(t, err, "%s %s", method, path)
	return r
}

// Settled waits until every worker of the server has processed the whole
// log, on three reads of /metrics in a row: a workflow may append events
// (revocations, say) while the other workers catch up, and those must be
// projected too before a test compares read models.
func (s *Server) Settled(t *testing.T) {
	t.Helper()
	quiet := 0
	require.Eventually(t, func() bool {
		r, err := s.Try(http.MethodGet, "/metrics", "", nil)
		if err != nil || r.Status != http.StatusOK {
			quiet = 0
			return false
		}
		workers := 0
		for line := range strings.SplitSeq(string(r.Body), "\n") {
			if !strings.HasPrefix(line, "evident_worker_lag_events{") {
				continue
			}
			workers++
			if !strings.HasSuffix(line, " 0") {
				quiet = 0
				return false
			}
		}
		if workers == 0 {
			return false
		}
		quiet++
		return quiet >= 3
	}, 15*time.Second, 50*time.Millisecond, "every worker has processed the whole log")
}

// Try is Do without a testing.TB, for goroutines: it returns transport errors.
func (s *Server) Try(method, path, token string, body any, header ...string) (*Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return s.TryContext(ctx, method, path, token, body, header...)
}

// TryContext is Try under ctx: a client that gives up early.
func (s *Server) TryContext(ctx context.Context, method, path, token string, body any, header ...string) (*Response, error) {
	if len(header)%2 != 0 {
		return nil, errors.New("header must be name, value pairs")
	}
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case []byte:
			rd = bytes.NewReader(b)
		case string:
			rd = strings.NewReader(b)
		case io.Reader:
			rd = b // sent chunked: no Content-Length
		default:
			buf, err := json.Marshal(b)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(buf)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// CLI runs the binary with args and --data-dir, and the server's own
// environment (its stores and WithEnv settings), returning its stdout; err
// carries stderr when the command fails.
func (s *Server) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append(args, "--data-dir", s.DataDir)...)
	cmd.Env = append(os.Environ(), "EVIDENT_PASSWORD_COST=4")
	cmd.Env = append(cmd.Env, s.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("evident %s: %w\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// RegisterUser registers a pending member as the admin and returns its id.
func (s *Server) RegisterUser(t testing.TB, email, name string) string {
	t.Helper()
	r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": email, "name": name})
	require.Equal(t, http.StatusCreated, r.Status, "register %s: %s", email, r.Body)
	id, _ := r.JSON(t)["id"].(string)
	require.NotEmpty(t, id, "register %s: %s", email, r.Body)
	return id
}

// RequestActivation asks for an activation token as the admin and returns it.
func (s *Server) RequestActivation(t testing.TB, id string) string {
	t.Helper()
	r := s.Do(t, http.MethodPost, "/v1/users/"+id+"/activation-requests", s.AdminToken, nil)
	require.Equal(t, http.StatusCreated, r.Status, "activation request for %s: %s", id, r.Body)
	tok, _ := r.JSON(t)["token"].(string)
	require.NotEmpty(t, tok, "activation request for %s: %s", id, r.Body)
	return tok
}

// ActivateUser requests an activation token as the admin and redeems it with password.
func (s *Server) ActivateUser(t testing.TB, id, password string) {
	t.Helper()
	tok := s.RequestActivation(t, id)
	r := s.Do(t, http.MethodPost, "/v1/activations", "", map[string]any{"token": tok, "password": password})
	require.Equal(t, http.StatusOK, r.Status, "activate %s: %s", id, r.Body)
}

// NewActiveUser registers and activates a member with userPassword.
func (s *Server) NewActiveUser(t testing.TB, name string) (id, email string) {
	t.Helper()
	email = uniqueEmail(t)
	id = s.RegisterUser(t, email, name)
	s.ActivateUser(t, id, userPassword)
	return id, email
}

// Login opens a session and returns its bearer token and id.
func (s *Server) Login(t testing.TB, email, password string) (token, sessionID string) {
	t.Helper()
	r := s.Do(t, http.MethodPost, "/v1/sessions", "", map[string]any{"email": email, "password": password})
	require.Equal(t, http.StatusCreated, r.Status, "login %s: %s", email, r.Body)
	m := r.JSON(t)
	token, _ = m["token"].(string)
	sessionID, _ = m["session_id"].(string)
	require.NotEmpty(t, token, "login %s: %s", email, r.Body)
	require.NotEmpty(t, sessionID, "login %s: %s", email, r.Body)
	return token, sessionID
}

// Audit reads the whole audit trail matching query (e.g. "action=user_created"),
// following next_cursor to the end.
func (s *Server) Audit(t testing.TB, query string) []map[string]any {
	t.Helper()
	return s.pages(t, "/v1/audit", query)
}

// UserEvents reads every audit row of one user via /v1/users/{id}/events.
func (s *Server) UserEvents(t testing.TB, id string) []map[string]any {
	t.Helper()
	return s.pages(t, "/v1/users/"+id+"/events", "")
}

// Users reads every row of GET /v1/users matching query.
func (s *Server) Users(t testing.TB, query string) []map[string]any {
	t.Helper()
	return s.pages(t, "/v1/users", query)
}

func (s *Server) pages(t testing.TB, path, query string) []map[string]any {
	t.Helper()
	rows, err := s.TryPages(path, query)
	require.NoError(t, err)
	return rows
}

// TryPages reads every row of a list endpoint as the admin, following
// next_cursor; it reports failures instead of failing the test, for use in
// goroutines and require.Eventually conditions.
func (s *Server) TryPages(path, query string) ([]map[string]any, error) {
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	if q.Get("limit") == "" {
		q.Set("limit", "500")
	}
	var all []map[string]any
	seen := map[string]bool{}
	for {
		r, err := s.Try(http.MethodGet, path+"?"+q.Encode(), s.AdminToken, nil)
		if err != nil {
			return nil, err
		}
		if r.Status != http.StatusOK {
			return nil, fmt.Errorf("GET %s?%s: %s", path, q.Encode(), r)
		}
		var page struct {
			Items      []map[string]any `json:"items"`
			NextCursor string           `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			return nil, fmt.Errorf("GET %s?%s: %w", path, q.Encode(), err)
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all, nil
		}
		if seen[page.NextCursor] {
			return nil, fmt.Errorf("GET %s: cursor %q repeats: paging loops", path, page.NextCursor)
		}
		seen[page.NextCursor] = true
		q.Set("cursor", page.NextCursor)
	}
}

var emailSeq atomic.Int64

var nonLocal = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueEmail is an address no other test (or run) uses.
func uniqueEmail(t testing.TB) string {
	local := strings.Trim(nonLocal.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(local) > 40 {
		local = local[len(local)-40:]
	}
	return fmt.Sprintf("%s-%d-%d@example.test", strings.Trim(local, "-"), time.Now().UnixNano()%1_000_000_000, emailSeq.Add(1))
}

// requireProblem checks that r is a problem+json answer with status and code.
func requireProblem(t testing.TB, r *Response, status int, code string, msgAndArgs ...any) {
	t.Helper()
	require.Equal(t, status, r.Status, append([]any{"body: %s"}, r.Body)...)
	assertProblem(t, r, status, code, msgAndArgs...)
}

// assertProblem is requireProblem that goes on after a mismatch.
func assertProblem(t testing.TB, r *Response, status int, code string, msgAndArgs ...any) bool {
	t.Helper()
	ok := assert.Equal(t, status, r.Status, append([]any{"status; body: %s"}, r.Body)...)
	ok = assert.Equal(t, "application/problem+json", r.Header.Get("Content-Type"), msgAndArgs...) && ok
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	if !assert.NoError(t, json.Unmarshal(r.Body, &p), "problem body %q", r.Body) {
		return false
	}
	ok = assert.Equal(t, code, p.Code, msgAndArgs...) && ok
	ok = assert.Equal(t, r.Status, p.Status, "status in the problem body") && ok
	return ok
}

// actions lists the action of every audit row, in order.
func actions(rows []map[string]any) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i], _ = r["action"].(string)
	}
	return out
}

// countBy counts rows by the string value of key.
func countBy(rows []map[string]any, key string) map[string]int {
	out := map[string]int{}
	for _, r := range rows {
		v, _ := r[key].(string)
		out[v]++
	}
	return out
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no output: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… %d lines omitted", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// TestHarness checks the harness itself: start, admin login, restart.
func TestHarness(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	require.NotEmpty(t, s.AdminToken)
	require.NotEmpty(t, s.AdminID)
	id := s.RegisterUser(t, uniqueEmail(t), "Harness")
	s.Restart(t)
	r := s.Do(t, http.MethodGet, "/v1/users/"+id, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	s.Kill()
	require.False(t, s.Running())
}
