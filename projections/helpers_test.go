package projections_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/eventstore/sqlite"
	"evident/internal/pgtest"
	"evident/internal/sqlitedb"
	"evident/projections"
	"evident/readmodels"
)

var t0 = time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)

// eachDialect runs test on SQLite and on PostgreSQL.
func eachDialect(t *testing.T, test func(t *testing.T, dialect string)) {
	t.Helper()
	pgtest.EachDialect(t, test)
}

// env is a real SQLite file holding the event log and, on SQLite, the read
// models; on PostgreSQL the read models live in a schema of their own.
type env struct {
	dialect string
	url     string // PostgreSQL: the schema's connection string
	db      *sqlitedb.DB
	es      *sqlite.Store
	rm      *readmodels.Store

	mu    sync.Mutex
	clock time.Time // occurred_at of the next event; each append moves it on
}

func newEnv(t *testing.T, dialect string) *env {
	t.Helper()
	db, err := sqlitedb.Open(filepath.Join(t.TempDir(), "evident.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close() })
	es, err := sqlite.New(db)
	require.NoError(t, err)
	t.Cleanup(func() { _ = es.Close() })
	e := &env{dialect: dialect, db: db, es: es, clock: t0}
	switch dialect {
	case readmodels.DialectSQLite:
		e.rm, err = readmodels.Open(context.Background(), readmodels.DialectSQLite, db.Write, db.Read)
		require.NoError(t, err)
	case readmodels.DialectPostgres:
		e.url = pgtest.URL(t)
		e.rm = e.instance(t, "")
	default:
		t.Fatalf("unknown dialect %q", dialect)
	}
	require.NoError(t, e.rm.Migrate(context.Background()))
	return e
}

// instance opens another Store on the PostgreSQL read models, on a pool of
// its own, as another process would. A non-empty appName tags its sessions
// (application_name), so that a test can end them.
func (e *env) instance(t *testing.T, appName string) *readmodels.Store {
	t.Helper()
	require.Equal(t, readmodels.DialectPostgres, e.dialect)
	cfg, err := pgxpool.ParseConfig(e.url)
	require.NoError(t, err)
	cfg.MaxConns = 8
	if appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	rm, err := readmodels.Open(context.Background(), readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	return rm
}

type typed interface{ EventType() string }

// append writes events to one stream and returns the position of the last.
func (e *env) append(t *testing.T, stream string, evs ...typed) eventstore.Position {
	t.Helper()
	return e.appendCtx(context.Background(), t, stream, evs...)
}

func (e *env) appendCtx(ctx context.Context, t require.TestingT, stream string, evs ...typed) eventstore.Position {
	req := eventstore.AppendRequest{Stream: stream, Expected: eventstore.Any}
	for _, ev := range evs {
		id := uuid.Must(uuid.NewV7())
		e.mu.Lock()
		e.clock = e.clock.Add(time.Second)
		at := e.clock
		e.mu.Unlock()
		data, err := json.Marshal(ev)
		require.NoError(t, err)
		md, err := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: at, ActorID: "actor-1",
			CorrelationID: id.String(), SchemaVersion: 1})
		require.NoError(t, err)
		req.Events = append(req.Events, eventstore.EventData{ID: id, Type: ev.EventType(), Data: data, Metadata: md})
	}
	res, err := e.es.Append(ctx, req)
	require.NoError(t, err)
	return res.Position
}

// all reads the whole log.
func (e *env) all(t *testing.T) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := e.es.ReadAll(context.Background(), eventstore.Position{}, 100000)
	require.NoError(t, err)
	return evs
}

// applyAll applies every event of the log to ps in one transaction, without
// checkpoints: the projections' logic on its own.
func (e *env) applyAll(t *testing.T, ps ...projections.Projection) {
	t.Helper()
	evs := e.all(t)
	require.NoError(t, e.rm.Update(context.Background(), func(tx *readmodels.Tx) error {
		for _, p := range ps {
			for _, ev := range evs {
				if err := p.Apply(tx, ev); err != nil {
					return err
				}
			}
		}
		return nil
	}))
}

func (e *env) dump(t *testing.T) map[string][]map[string]any {
	t.Helper()
	d, err := e.rm.Dump(context.Background())
	require.NoError(t, err)
	return d
}

// start runs a Runner until the test ends (or stop is called) and returns it.
func (e *env) start(t *testing.T, ps []projections.Projection, opts projections.Options) (*projections.Runner, func()) {
	t.Helper()
	return e.startOn(t, e.rm, ps, opts)
}

// startOn runs a Runner on rm, which may be another instance's Store.
func (e *env) startOn(t *testing.T, rm *readmodels.Store, ps []projections.Projection, opts projections.Options) (*projections.Runner, func()) {
	t.Helper()
	r := projections.NewRunner(e.es, rm, ps, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

func waitFor(t *testing.T, r *projections.Runner, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.WaitFor(ctx, pos))
}

// fast retries for tests.
func fast(maxRetries int) projections.Options {
	return projections.Options{MaxRetries: maxRetries, RetryDelay: time.Millisecond, MaxRetryDelay: 5 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
}

func userStream(id uuid.UUID) string    { return "user-" + id.String() }
func sessionStream(id uuid.UUID) string { return "session-" + id.String() }

// register appends a user's creation with its e-mail claim, as commands do.
func (e *env) register(t *testing.T, id uuid.UUID, addr string, roles ...string) eventstore.Position {
	t.Helper()
	res, err := e.es.Append(context.Background(),
		eventstore.AppendRequest{Stream: email.Stream(addr), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{mkData(t, e, email.Claimed{UserID: id})}},
		eventstore.AppendRequest{Stream: userStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{mkData(t, e, user.Created{UserID: id, Email: addr, Name: "N " + addr, Roles: roles})}},
	)
	require.NoError(t, err)
	return res.Position
}

func mkData(t *testing.T, e *env, ev typed) eventstore.EventData {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	e.mu.Lock()
	e.clock = e.clock.Add(time.Second)
	at := e.clock
	e.mu.Unlock()
	data, err := json.Marshal(ev)
	require.NoError(t, err)
	md, err := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: at, ActorID: "actor-1", CorrelationID: id.String(), SchemaVersion: 1})
	require.NoError(t, err)
	return eventstore.EventData{ID: id, Type: ev.EventType(), Data: data, Metadata: md}
}

func (e *env) login(t *testing.T, userID uuid.UUID, expires time.Time) (uuid.UUID, eventstore.Position) {
	t.Helper()
	sid := uuid.Must(uuid.NewV7())
	pos := e.append(t, sessionStream(sid), session.LoggedIn{SessionID: sid, UserID: userID, TokenHash: "th-" + sid.String(), ExpiresAt: expires})
	return sid, pos
}

// workload appends a mix of every event type over several users and returns
// the last position.
func (e *env) workload(t *testing.T, users int) eventstore.Position {
	t.Helper()
	var last eventstore.Position
	for i := range users {
		id := uuid.Must(uuid.NewV7())
		addr := "user-" + id.String() + "@example.org"
		e.register(t, id, addr, "member")
		name := "Renamed"
		e.append(t, userStream(id), user.Updated{UserID: id, Name: &name, UpdatedBy: "admin"})
		e.append(t, userStream(id), user.ActivationRequested{UserID: id, TokenHash: "a-" + id.String(), ExpiresAt: t0.Add(time.Hour), RequestedBy: "admin"})
		e.append(t, userStream(id), user.ActivationRequested{UserID: id, TokenHash: "b-" + id.String(), ExpiresAt: t0.Add(2 * time.Hour), RequestedBy: "admin"})
		switch i % 4 {
		case 0:
			e.append(t, userStream(id), user.Activated{UserID: id, ActivatedBy: id.String(), Method: user.MethodToken, TokenHash: "b-" + id.String()})
			s1, _ := e.login(t, id, t0.Add(time.Hour))
			e.login(t, id, t0.Add(time.Hour))
			e.append(t, sessionStream(s1), session.LoggedOut{SessionID: s1, UserID: id})
		case 1:
			e.append(t, userStream(id), user.ActivationTokenExpired{UserID: id, TokenHash: "b-" + id.String(), ExpiredAt: t0.Add(2 * time.Hour)})
			e.append(t, userStream(id), user.Activated{UserID: id, ActivatedBy: "admin", Method: user.MethodAdmin})
			s1, _ := e.login(t, id, t0.Add(time.Hour))
			e.append(t, userStream(id), user.Deactivated{UserID: id, DeactivatedBy: "admin", Reason: "left"})
			e.append(t, sessionStream(s1), session.Revoked{SessionID: s1, UserID: id, Reason: session.ReasonUserDeactivated, RevokedBy: "system"})
		case 2:
			e.append(t, userStream(id), user.StatusChanged{UserID: id, From: user.StatusPending, To: user.StatusSuspended, ChangedBy: "admin"})
		case 3:
			e.append(t, userStream(id), user.Activated{UserID: id, ActivatedBy: "admin", Method: user.MethodAuto})
			s1, _ := e.login(t, id, t0.Add(time.Minute))
			e.append(t, sessionStream(s1), session.Expired{SessionID: s1, UserID: id, ExpiredAt: t0.Add(time.Minute)})
			s2, _ := e.login(t, id, t0.Add(time.Hour))
			e.append(t, userStream(id), user.Deleted{UserID: id, DeletedBy: "admin"})
			_, err := e.es.Append(context.Background(), eventstore.AppendRequest{Stream: email.Stream(addr), Expected: eventstore.Any,
				Events: []eventstore.EventData{mkData(t, e, email.Released{UserID: id})}})
			require.NoError(t, err)
			last = e.append(t, sessionStream(s2), session.Revoked{SessionID: s2, UserID: id, Reason: session.ReasonUserDeleted, RevokedBy: "system"})
		}
		last = e.append(t, "other-"+id.String(), unknownEvent{}) // a type nobody projects
	}
	return last
}

type unknownEvent struct {
	X int `json:"x"`
}

func (unknownEvent) EventType() string { return "future.thing_happened" }
