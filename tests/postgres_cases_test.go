package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"evident/eventstore"
	pgevents "evident/eventstore/postgres"
	"evident/projections"
	"evident/readmodels"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// These tests are about PostgreSQL itself: several instances on one
// database, a long catch-up, an outage of the server. They run in the
// suite's PostgreSQL run (EVIDENT_TEST_STORE=postgres with
// EVIDENT_TEST_DATABASE_URL), not again in the SQLite run; C02 needs
// EVIDENT_TEST_DISRUPTIVE=1 as well (see disruptive).

// postgresRun skips a PostgreSQL-only test outside the PostgreSQL run.
func postgresRun(t *testing.T) {
	t.Helper()
	if !onPostgres() {
		t.Skip("PostgreSQL only: runs with " + EnvTestStore + "=postgres")
	}
}

// workerStatus is one entry of GET /v1/workflows/status.
type workerStatus struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Position  string `json:"position"`
	LastError string `json:"last_error"`
	Parked    int    `json:"parked"`
	Running   bool   `json:"running"`
	Standby   bool   `json:"standby"`
}

// Workers reads GET /v1/workflows/status as the admin.
func (s *Server) Workers() ([]workerStatus, error) {
	r, err := s.Try(http.MethodGet, "/v1/workflows/status", s.AdminToken, nil)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("workflow status: %s", r)
	}
	var st struct {
		Workers []workerStatus `json:"workers"`
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return nil, fmt.Errorf("workflow status: %w: %s", err, r.Body)
	}
	return st.Workers, nil
}

// runningProjections names the projections this instance runs (holds the
// lease of).
func runningProjections(ws []workerStatus) []string {
	var out []string
	for _, w := range ws {
		if w.Kind == "projection" && w.Running {
			out = append(out, w.Name)
		}
	}
	return out
}

// readyStatus is GET /readyz's status code, 0 when the server did not answer.
func (s *Server) readyStatus() int {
	r, err := s.Try(http.MethodGet, "/readyz", "", nil)
	if err != nil {
		return 0
	}
	return r.Status
}

// ---------------------------------------------------------------------------
// Several instances on one database

// instanceLoad is what a workload over several instances saw: per user, the
// audit actions of the commands that were acknowledged (2xx), and the users
// whose later commands got no answer (they may or may not be stored).
type instanceLoad struct {
	mu        sync.Mutex
	acked     map[string][]string // user id -> actions acknowledged, in order
	uncertain map[string]bool     // user id -> a command of it got no answer
	failures  []string
	commands  atomic.Int64
	accepted  atomic.Int64 // answered 202: stored, views lagging
	behind    atomic.Int64 // ?after reads answered 503 read_model_behind
}

func (l *instanceLoad) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, fmt.Sprintf(format, args...))
}

func (l *instanceLoad) ack(id, action string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[id] = append(l.acked[id], action)
}

func (l *instanceLoad) unsure(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.uncertain[id] = true
}

// TestPostgresSeveralInstances: three serve processes on one schema share
// the API; reads on any instance see what any other acknowledged; when the
// process running the projections is killed under load another one takes
// them over within seconds, and every acknowledged command is in the audit
// exactly once, with no duplicates and no gaps.
func TestPostgresSeveralInstances(t *testing.T) {
	postgresRun(t)
	t.Parallel()
	u := freshDatabaseURL(t)
	servers := make([]*Server, 3)
	for i := range servers {
		servers[i] = startServer(t, WithDatabaseURL(u))
	}

	// Every instance answers reads and commands; the one started first
	// took the projection leases, the others stand by.
	holder, most := -1, 0
	for i, s := range servers {
		ws, err := s.Workers()
		require.NoError(t, err)
		run := runningProjections(ws)
		t.Logf("instance %d runs %v", i, run)
		if len(run) > most {
			holder, most = i, len(run)
		}
	}
	require.GreaterOrEqual(t, holder, 0, "no instance runs a projection")

	load := &instanceLoad{acked: map[string][]string{}, uncertain: map[string]bool{}}
	var (
		aliveMu sync.Mutex
		alive   = []*Server{servers[0], servers[1], servers[2]}
		rr      atomic.Int64
	)
	// pick returns the next live instance, round robin.
	pick := func() *Server {
		aliveMu.Lock()
		defer aliveMu.Unlock()
		return alive[int(rr.Add(1))%len(alive)]
	}
	// others returns two live instances other than a (the same one twice
	// when only two live).
	others := func(a *Server) (b, c *Server) {
		aliveMu.Lock()
		defer aliveMu.Unlock()
		var rest []*Server
		for _, s := range alive {
			if s != a {
				rest = append(rest, s)
			}
		}
		return rest[0], rest[len(rest)-1]
	}

	// step runs one command on one instance and checks read-your-writes on
	// two others: without ?after (the answer waited for the projections,
	// whose tables every instance reads) and with ?after=<position>.
	step := func(id, method, path, action, want string, body any) (ok bool) {
		a := pick()
		r, err := a.Try(method, path, a.AdminToken, body)
		load.commands.Add(1)
		if err != nil {
			load.unsure(id)
			return false // the instance may have been killed
		}
		if r.Status/100 != 2 {
			if r.Status >= 500 {
				load.unsure(id) // may or may not be stored
			}
			load.fail("%s %s on %s: %s", method, path, a.addr, r)
			return false
		}
		var v struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			Position string `json:"position"`
		}
		if err := json.Unmarshal(r.Body, &v); err != nil || v.ID == "" {
			load.fail("%s %s: %v: %s", method, path, err, r)
			return false
		}
		if id == "" {
			id = v.ID
		}
		load.ack(id, action)
		if r.Status == http.StatusAccepted {
			load.accepted.Add(1) // the views lag: only ?after promises anything
		}
		b, c := others(a)
		if r.Status != http.StatusAccepted {
			g, err := b.Try(http.MethodGet, "/v1/users/"+id, b.AdminToken, nil)
			if err == nil && (g.Status != http.StatusOK || !strings.Contains(string(g.Body), `"status":"`+want+`"`)) {
				load.fail("read-your-writes: %s on %s answered %d, then GET on %s without after: %s", action, a.addr, r.Status, b.addr, g)
			}
		}
		g, err := c.Try(http.MethodGet, "/v1/users/"+id+"?after="+v.Position, c.AdminToken, nil)
		if err == nil && g.Status == http.StatusServiceUnavailable {
			load.behind.Add(1) // not caught up within the wait: honest, counted
		} else if err == nil && (g.Status != http.StatusOK || !strings.Contains(string(g.Body), `"status":"`+want+`"`)) {
			load.fail("read-your-writes: %s on %s at %s, then GET on %s with after: %s", action, a.addr, v.Position, c.addr, g)
		}
		return true
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var users atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				email := fmt.Sprintf("several-%d-%d-%d@example.test", time.Now().UnixNano(), w, i)
				a := pick()
				r, err := a.Try(http.MethodPost, "/v1/users", a.AdminToken, map[string]any{"email": email, "name": "Several"})
				load.commands.Add(1)
				if err != nil {
					continue // killed in flight: unknown, checked for duplicates only
				}
				if r.Status != http.StatusCreated && r.Status != http.StatusAccepted {
					load.fail("register on %s: %s", a.addr, r)
					continue
				}
				var v struct {
					ID       string `json:"id"`
					Position string `json:"position"`
				}
				if err := json.Unmarshal(r.Body, &v); err != nil || v.ID == "" {
					load.fail("register: %v: %s", err, r)
					continue
				}
				users.Add(1)
				load.ack(v.ID, "user_created")
				if r.Status == http.StatusAccepted {
					load.accepted.Add(1)
				}
				if _, c := others(a); c != nil {
					g, err := c.Try(http.MethodGet, "/v1/users/"+v.ID+"?after="+v.Position, c.AdminToken, nil)
					if err == nil && g.Status == http.StatusServiceUnavailable {
						load.behind.Add(1)
					} else if err == nil && g.Status != http.StatusOK {
						load.fail("read-your-writes: register on %s, then GET on %s with after: %s", a.addr, c.addr, g)
					}
				}
				if !step(v.ID, http.MethodPost, "/v1/users/"+v.ID+"/activate", "user_activated", "active", nil) {
					continue
				}
				if i%2 == 0 {
					step(v.ID, http.MethodPost, "/v1/users/"+v.ID+"/deactivate", "user_deactivated", "inactive", map[string]any{"reason": "several"})
				}
			}
		})
	}

	// Let the load run, then kill the process that runs the projections.
	require.Eventually(t, func() bool { return users.Load() >= 150 }, 60*time.Second, 10*time.Millisecond, "the load made no progress")
	victim := servers[holder]
	aliveMu.Lock()
	alive = nil
	for i, s := range servers {
		if i != holder {
			alive = append(alive, s)
		}
	}
	aliveMu.Unlock()
	killed := time.Now()
	victim.Kill()
	t.Logf("killed instance %d (%s) after %d users", holder, victim.addr, users.Load())

	// Another instance takes every projection over within seconds.
	var took time.Duration
	require.Eventually(t, func() bool {
		have := map[string]bool{}
		for _, s := range alive {
			ws, err := s.Workers()
			if err != nil {
				return false
			}
			for _, n := range runningProjections(ws) {
				have[n] = true
			}
		}
		if len(have) < 4 { // users, sessions, activation_tokens, audit
			return false
		}
		took = time.Since(killed)
		return true
	}, 10*time.Second, 20*time.Millisecond, "no instance took the projections over")
	t.Logf("projections taken over %s after the kill", took.Round(time.Millisecond))
	before := users.Load()
	require.Eventually(t, func() bool { return users.Load() >= before+150 }, 60*time.Second, 10*time.Millisecond,
		"the load made no progress after the takeover")
	close(stop)
	wg.Wait()
	t.Logf("%d commands, %d users registered, %d answered 202, %d reads with ?after answered 503",
		load.commands.Load(), users.Load(), load.accepted.Load(), load.behind.Load())
	if len(load.failures) > 20 {
		load.failures = append(load.failures[:20], fmt.Sprintf("… and %d more", len(load.failures)-20))
	}
	assert.Empty(t, load.failures)

	// Every acknowledged command's event is in the audit exactly once; the
	// audit has no duplicates and no gaps; the users count matches.
	s := alive[0]
	last := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": uniqueEmail(t), "name": "Last"})
	require.Equal(t, http.StatusCreated, last.Status, "%s", last)
	audit := s.Audit(t, "")
	assertUniqueEventIDs(t, audit)
	byUser := map[string][]string{}
	for _, row := range audit {
		if row["aggregate_type"] == "user" {
			id, _ := row["aggregate_id"].(string)
			byUser[id] = append(byUser[id], row["action"].(string))
		}
	}
	for id, want := range load.acked {
		got := byUser[id]
		if load.uncertain[id] {
			// A command without an answer may or may not be stored, once.
			assert.Subset(t, got, want, "user %s: acknowledged actions are audited", id)
			for a, n := range countStrings(got) {
				assert.Equal(t, 1, n, "user %s: %s audited %d times", id, a, n)
			}
			continue
		}
		assert.Equal(t, want, got, "user %s: audit rows of the acknowledged commands", id)
	}
	all := s.Users(t, "")
	created := 0
	for _, row := range audit {
		if row["action"] == "user_created" {
			created++
		}
	}
	assert.Len(t, all, created, "one user per user_created")
	assert.GreaterOrEqual(t, len(all), len(load.acked)+2, "every acknowledged registration (and the admin and Last) is a user")
	for _, srv := range alive {
		other := srv.Users(t, "")
		assert.Equal(t, len(all), len(other), "every instance sees the same users")
	}
}

// countStrings counts each value.
func countStrings(xs []string) map[string]int {
	out := map[string]int{}
	for _, x := range xs {
		out[x]++
	}
	return out
}

// disruptive skips tests that take the PostgreSQL server down unless
// EVIDENT_TEST_DISRUPTIVE=1: they break every other test using the server at
// the time, including those of other packages that `go test ./...` runs at
// once. CI runs them in a step of their own.
func disruptive(t *testing.T) {
	t.Helper()
	if os.Getenv("EVIDENT_TEST_DISRUPTIVE") != "1" {
		t.Skip("stops the PostgreSQL server: set EVIDENT_TEST_DISRUPTIVE=1 and run it alone, e.g. " +
			"EVIDENT_TEST_STORE=postgres EVIDENT_TEST_DISRUPTIVE=1 go test -run TestPostgresC02 ./tests/")
	}
}

// ---------------------------------------------------------------------------
// Exactly once under SIGKILL during a long catch-up

// catchUpEvents is how many events TestPostgresKillDuringCatchUp writes
// before the first start (EVIDENT_TEST_CATCHUP_EVENTS overrides it).
func catchUpEvents(t *testing.T) int {
	t.Helper()
	n := 100_000
	if v := os.Getenv("EVIDENT_TEST_CATCHUP_EVENTS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err, "EVIDENT_TEST_CATCHUP_EVENTS")
		require.Positive(t, n, "EVIDENT_TEST_CATCHUP_EVENTS")
	}
	return n
}

// pgLog is the event store and read models of one schema, opened with the
// product's own packages: the test writes the log through commands.Handler
// (in pgload, while no server runs), reads it back, and watches the
// checkpoints the servers commit.
type pgLog struct {
	url    string
	events *pgevents.Store
	rm     *readmodels.Store
}

func openPGLog(t *testing.T, u string) *pgLog {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, u)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	events, err := pgevents.New(ctx, pool)
	require.NoError(t, err)
	t.Cleanup(func() { _ = events.Close() })
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	rm, err := readmodels.Open(ctx, readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	require.NoError(t, rm.Migrate(ctx))
	return &pgLog{url: u, events: events, rm: rm}
}

// pgloadOnce builds tests/internal/pgload, the log writer, once.
var (
	pgloadOnce sync.Once
	pgloadPath string
	pgloadErr  error
)

// write appends the lives of users until at least n events are in the log,
// with the product's command handler in a helper process built without the
// race detector (which would make it minutes); it returns how many users it
// registered. No server may run on the schema meanwhile.
func (l *pgLog) write(t *testing.T, n int) int {
	t.Helper()
	pgloadOnce.Do(func() {
		pgloadPath = filepath.Join(filepath.Dir(binPath), "pgload")
		build := exec.Command("go", "build", "-o", pgloadPath, "./tests/internal/pgload")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			pgloadErr = fmt.Errorf("go build ./tests/internal/pgload: %w\n%s", err, out)
		}
	})
	require.NoError(t, pgloadErr)
	// The writer need not wait for the disk: a crash of the test server
	// loses the test anyway.
	q, err := url.Parse(l.url)
	require.NoError(t, err)
	v := q.Query()
	v.Set("synchronous_commit", "off")
	q.RawQuery = v.Encode()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgloadPath, "-url", q.String(), "-events", strconv.Itoa(n), "-clients", "8")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "pgload: %s", stderr.String())
	var res struct{ Events, Users int }
	require.NoError(t, json.Unmarshal(out, &res), "pgload: %s", out)
	return res.Users
}

// all reads the whole log.
func (l *pgLog) all(t *testing.T) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	var after eventstore.Position
	for {
		evs, err := l.events.ReadAll(t.Context(), after, 5000)
		require.NoError(t, err)
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Position
	}
}

// checkpoints reads every projection's committed checkpoint; the least of
// them is how far the read models have caught up.
func (l *pgLog) checkpoints(t *testing.T) (map[string]eventstore.Position, eventstore.Position) {
	t.Helper()
	out := map[string]eventstore.Position{}
	var least eventstore.Position
	for i, name := range []string{projections.NameUsers, projections.NameSessions, projections.NameActivationTokens, projections.NameAudit} {
		cp, err := l.rm.Checkpoint(t.Context(), name)
		require.NoError(t, err, "checkpoint of %s", name)
		out[name] = cp
		if i == 0 || cp.Less(least) {
			least = cp
		}
	}
	return out, least
}

// TestPostgresKillDuringCatchUp: a server catching up on a long log from
// zero is killed (SIGKILL) at random points several times and restarted
// each time; it resumes from its committed checkpoints, and when it has
// caught up the read models hold every event exactly once, equal to a clean
// rebuild.
//
// Alone it takes about 2½ minutes for 100k events on two CPUs (a third
// writing the log, a third catching up, a third the rebuild and the
// comparisons); EVIDENT_TEST_CATCHUP_EVENTS makes the log shorter.
func TestPostgresKillDuringCatchUp(t *testing.T) {
	postgresRun(t)
	t.Parallel()
	n := catchUpEvents(t)
	u := freshDatabaseURL(t)
	l := openPGLog(t, u)

	began := time.Now()
	users := l.write(t, n)
	log := l.all(t)
	head := log[len(log)-1].Position
	t.Logf("wrote %d events (%d users) in %s", len(log), users, time.Since(began).Round(time.Millisecond))
	require.GreaterOrEqual(t, len(log), n)

	s := newServer(t, WithDatabaseURL(u))
	var kills []string
	least := eventstore.Position{}
	for k := range 4 {
		// A random point of the catch-up still ahead.
		target := log[len(log)*(k*20+5+rand.IntN(15))/100].Position
		done, err := s.spawn()
		require.NoError(t, err)
		l.waitCaughtUp(t, s, done, target, 60*time.Second)
		time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
		s.Kill()
		cps, now := l.checkpoints(t)
		assert.False(t, now.Less(least), "kill %d: the checkpoints went back from %s to %s", k, least, now)
		least = now
		kills = append(kills, fmt.Sprintf("%v", cps))
	}
	t.Logf("killed at checkpoints: %s", strings.Join(kills, "; "))

	// The last start catches up to the head of the log.
	done, err := s.spawn()
	require.NoError(t, err)
	l.waitCaughtUp(t, s, done, head, 180*time.Second)
	require.NoError(t, s.waitReady(done))
	s.loginAdmin(t)
	t.Logf("caught up after %s in all", time.Since(began).Round(time.Millisecond))
	ws, err := s.Workers()
	require.NoError(t, err)
	for _, w := range ws {
		assert.Zero(t, w.Parked, "%s %s parked events", w.Kind, w.Name)
		assert.Empty(t, w.LastError, "%s %s", w.Kind, w.Name)
	}

	// Every audited event of the log is in the audit exactly once, in log order.
	live := s.Audit(t, "")
	liveUsers := s.Users(t, "")
	log = l.all(t)
	var want []string
	for _, ev := range log {
		if projections.Action(ev.Type) != "" {
			want = append(want, ev.ID.String())
		}
	}
	got := make([]string, len(live))
	for i, row := range live {
		got[i], _ = row["event_id"].(string)
	}
	assertUniqueEventIDs(t, live)
	requireSameIDs(t, want, got, "audit rows vs audited events of the log")
	assert.Len(t, liveUsers, users+1, "users: every registration and the admin")

	// A clean rebuild gives the same tables.
	s.Stop()
	out, err := s.CLI(t, "rebuild")
	require.NoError(t, err, "rebuild")
	t.Logf("rebuild: %s", strings.TrimSpace(out))
	s.start(t)
	rebuilt := s.Audit(t, "")
	require.GreaterOrEqual(t, len(rebuilt), len(live), "the rebuilt audit is shorter than the live one")
	for i := range live {
		if !assert.Equal(t, live[i], rebuilt[i], "audit row %d differs after the rebuild", i) {
			break
		}
	}
	for _, row := range rebuilt[len(live):] {
		assert.Equal(t, "user_logged_in", row["action"], "new row after the rebuild: %v", row)
	}
	assert.Equal(t, liveUsers, s.Users(t, ""), "users differ after the rebuild")
}

// waitCaughtUp waits until every projection has committed target, while the
// server's process (done) runs.
func (l *pgLog) waitCaughtUp(t *testing.T, s *Server, done <-chan struct{}, target eventstore.Position, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-done:
			require.FailNow(t, "evident serve exited during the catch-up", "output:\n%s", tail(s.logPath, 50))
		default:
		}
		cps, least := l.checkpoints(t)
		if !least.Less(target) {
			return
		}
		if time.Now().After(deadline) {
			require.FailNow(t, "the catch-up is too slow", "not at %s within %s: %v", target, timeout, cps)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requireSameIDs compares two long lists and names the first difference.
func requireSameIDs(t *testing.T, want, got []string, what string) {
	t.Helper()
	for i := range min(len(want), len(got)) {
		if want[i] != got[i] {
			require.Failf(t, what, "first difference at %d of %d/%d: want %s, got %s", i, len(want), len(got), want[i], got[i])
		}
	}
	require.Equal(t, len(want), len(got), "%s: lengths", what)
}

// ---------------------------------------------------------------------------
// C02 database outage

// pgCluster controls the PostgreSQL server the tests use, as root on a
// Debian-style install: pg_ctlcluster <version> <name> start|stop.
// EVIDENT_TEST_PG_CLUSTER ("15 main") names the cluster; by default it is
// the only version under /etc/postgresql, cluster main.
func pgCluster(t *testing.T) func(action string) error {
	t.Helper()
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		t.Skip("C02 stops PostgreSQL with pg_ctlcluster, which is not installed")
	}
	cluster := strings.Fields(os.Getenv("EVIDENT_TEST_PG_CLUSTER"))
	if len(cluster) == 0 {
		vs, err := os.ReadDir("/etc/postgresql")
		if err != nil || len(vs) != 1 {
			t.Skip("C02 needs EVIDENT_TEST_PG_CLUSTER (e.g. \"15 main\"): no single version under /etc/postgresql")
		}
		cluster = []string{vs[0].Name(), "main"}
	}
	require.Len(t, cluster, 2, "EVIDENT_TEST_PG_CLUSTER is \"<version> <name>\"")
	return func(action string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		args := []string{"--skip-systemctl-redirect", cluster[0], cluster[1], action}
		if action == "stop" {
			args = append(args, "--", "-m", "fast") // ends the sessions at once
		}
		out, err := exec.CommandContext(ctx, "pg_ctlcluster", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("pg_ctlcluster %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
}

// TestPostgresC02_DatabaseOutage: while the service runs, PostgreSQL stops
// for ~20 s. Meanwhile /readyz is 503; afterwards, without a restart of
// Evident, a new registration and a deactivation of an older user are
// projected and audited, and /readyz is 200 again.
//
// It stops the whole server, so it runs only with EVIDENT_TEST_DISRUPTIVE=1
// and not in parallel: top-level tests that call t.Parallel start only after
// every sequential one has finished, so no other test of this package runs
// during the outage; tests of other packages must not run either (CI: a step
// of its own, or go test -p 1).
func TestPostgresC02_DatabaseOutage(t *testing.T) {
	postgresRun(t)
	disruptive(t)
	pg := pgCluster(t)
	s := startServer(t, WithDatabaseURL(freshDatabaseURL(t)))

	olderID, olderEmail := s.NewActiveUser(t, "Older")
	olderToken, _ := s.Login(t, olderEmail, userPassword)
	other := s.RegisterUser(t, uniqueEmail(t), "Other")

	// Whatever happens, the database comes back (before the schema is
	// dropped: cleanups run last first).
	t.Cleanup(func() {
		if pg("status") == nil {
			return // running
		}
		if err := pg("start"); err != nil {
			t.Errorf("restart PostgreSQL: %v", err)
		}
	})
	require.NoError(t, pg("stop"))
	stopped := time.Now()
	t.Logf("PostgreSQL stopped")

	require.Eventually(t, func() bool { return s.readyStatus() == http.StatusServiceUnavailable }, 15*time.Second, 100*time.Millisecond,
		"/readyz is not 503 while the database is down")
	// Commands fail, and say so, without the process dying.
	r, err := s.TryContext(t.Context(), http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": uniqueEmail(t), "name": "During"})
	if assert.NoError(t, err, "a command during the outage gets an answer") {
		assert.GreaterOrEqual(t, r.Status, 500, "a command during the outage: %s", r)
		t.Logf("a command during the outage: %s", r)
	}
	for time.Since(stopped) < 20*time.Second {
		assert.Equal(t, http.StatusServiceUnavailable, s.readyStatus(), "/readyz during the outage")
		time.Sleep(time.Second)
	}
	require.True(t, s.Running(), "evident serve exited during the outage")

	require.NoError(t, pg("start"))
	restarted := time.Now()
	t.Logf("PostgreSQL started after %s", restarted.Sub(stopped).Round(time.Millisecond))

	// The service recovers by itself: a new registration (retried until it
	// is stored) and a deactivation of an older user are projected.
	newEmail := uniqueEmail(t)
	var newID string
	var last *Response
	require.Eventually(t, func() bool {
		r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, map[string]any{"email": newEmail, "name": "After"})
		if err != nil {
			return false
		}
		last = r
		switch r.Status {
		case http.StatusCreated:
			var v struct{ ID string }
			return json.Unmarshal(r.Body, &v) == nil && v.ID != ""
		case http.StatusConflict: // an earlier attempt was stored after all
			return true
		}
		return false
	}, 60*time.Second, 250*time.Millisecond, "no registration succeeded after the outage: last %v", last)
	t.Logf("registration stored %s after the restart of PostgreSQL: %s", time.Since(restarted).Round(time.Millisecond), last)
	require.Eventually(t, func() bool {
		r, err := s.Try(http.MethodPost, "/v1/users/"+olderID+"/deactivate", s.AdminToken, map[string]any{"reason": "c02"})
		return err == nil && r.Status == http.StatusOK
	}, 30*time.Second, 250*time.Millisecond, "deactivation after the outage")
	require.Eventually(t, func() bool { return s.readyStatus() == http.StatusOK }, 30*time.Second, 100*time.Millisecond,
		"/readyz is not 200 after the database came back")
	t.Logf("ready %s after the restart of PostgreSQL", time.Since(restarted).Round(time.Millisecond))

	// Projected: queries and audit (the answers waited for the projections;
	// ?after is not needed, but the audit read is retried for a late 202).
	found := s.Users(t, "email="+url.QueryEscape(newEmail))
	require.Len(t, found, 1, "the new user is listed")
	newID, _ = found[0]["id"].(string)
	assert.Equal(t, "pending", found[0]["status"])
	r = s.Do(t, http.MethodGet, "/v1/users/"+olderID, s.AdminToken, nil)
	require.Equal(t, http.StatusOK, r.Status, "%s", r)
	assert.Equal(t, "inactive", r.JSON(t)["status"], "the older user is deactivated")
	assert.Equal(t, []string{"user_created"}, actions(s.UserEvents(t, newID)), "the new user's audit")
	assert.Equal(t, []string{"user_created", "user_activation_requested", "user_activated", "user_logged_in", "user_deactivated", "session_revoked"},
		actions(s.UserEvents(t, olderID)), "the older user's audit")
	r = s.Do(t, http.MethodGet, "/v1/users/"+olderID, olderToken, nil)
	assertProblem(t, r, http.StatusUnauthorized, "unauthenticated", "the deactivated user's session")
	assert.Equal(t, []string{"user_created"}, actions(s.UserEvents(t, other)), "the other user's audit")
	assertUniqueEventIDs(t, s.Audit(t, ""))
}
