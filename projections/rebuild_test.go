package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/user"
	"evident/eventstore"
	"evident/internal/pgtest"
	"evident/projections"
	"evident/readmodels"
)

// countAll pages through a list and counts its items.
func countAll[T any](ctx context.Context, list func(cursor string) (readmodels.Page[T], error)) (int, error) {
	n, cursor := 0, ""
	for {
		p, err := list(cursor)
		if err != nil {
			return n, err
		}
		n += len(p.Items)
		if p.NextCursor == "" {
			return n, nil
		}
		cursor = p.NextCursor
	}
}

// monotonicReader queries users and audit on rm until stop is closed and
// reports every error and every count that went down.
func monotonicReader(rm *readmodels.Store, stop <-chan struct{}) <-chan []string {
	out := make(chan []string, 1)
	go func() {
		ctx := context.Background()
		var problems []string
		seen := map[string]int{}
		reads := 0
		defer func() { out <- append(problems, fmt.Sprint("reads: ", reads)) }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			counts := map[string]func() (int, error){
				"users": func() (int, error) {
					return countAll(ctx, func(c string) (readmodels.Page[readmodels.User], error) {
						return rm.Users(ctx, readmodels.UserFilter{Cursor: c, Limit: readmodels.MaxLimit})
					})
				},
				"audit": func() (int, error) {
					return countAll(ctx, func(c string) (readmodels.Page[readmodels.AuditRecord], error) {
						return rm.Audit(ctx, readmodels.AuditFilter{Cursor: c, Limit: readmodels.MaxLimit})
					})
				},
			}
			for name, count := range counts {
				n, err := count()
				switch {
				case err != nil:
					problems = append(problems, fmt.Sprintf("%s: %v", name, err))
				case n < seen[name]:
					problems = append(problems, fmt.Sprintf("%s: %d rows after %d", name, n, seen[name]))
				default:
					seen[name] = n
				}
			}
			reads++
		}
	}()
	return out
}

// indexNames lists the indexes and constraints of the schema by table, and
// the tables a rebuild left behind.
func indexNames(t *testing.T, url string) (map[string][]string, []string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	out := map[string][]string{}
	rows, err := conn.Query(ctx, `SELECT tablename, indexname FROM pg_indexes WHERE schemaname = current_schema()
		UNION ALL SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
		ORDER BY 1, 2`)
	require.NoError(t, err)
	for rows.Next() {
		var tbl, name string
		require.NoError(t, rows.Scan(&tbl, &name))
		out[tbl] = append(out[tbl], name)
	}
	require.NoError(t, rows.Err())
	rows, err = conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%\_rebuild'`)
	require.NoError(t, err)
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return out, left
}

// freshStore opens migrated read models in a schema of their own.
func freshStore(t *testing.T) *readmodels.Store {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.URL(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	rm, err := readmodels.Open(context.Background(), readmodels.DialectPostgres, db, db)
	require.NoError(t, err)
	require.NoError(t, rm.Migrate(context.Background()))
	return rm
}

// On PostgreSQL a rebuild runs beside the serving instance: queries never
// fail and never see fewer rows, the live Runner goes on projecting into
// the switched-in tables, and the result equals a clean rebuild.
func TestRebuildBesideALiveRunner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, readmodels.DialectPostgres)
	schemaBefore, _ := indexNames(t, e.url)
	last := e.workload(t, 4)

	serving := e.instance(t, "") // the serving process; e.rm is the rebuilding one
	var logs syncBuffer
	opts := instanceOpts(t, serving)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	r, stop := e.startOn(t, serving, projections.All(), opts)
	waitFor(t, r, last)

	stopReading := make(chan struct{})
	problems := monotonicReader(serving, stopReading)
	stopReader := sync.OnceValue(func() []string {
		close(stopReading)
		return <-problems
	})
	t.Cleanup(func() { stopReader() })
	stopAppending := make(chan struct{})
	lastCh := e.appendUntil(t, stopAppending)
	stopAppender := sync.OnceValue(func() eventstore.Position {
		close(stopAppending)
		return <-lastCh
	})
	t.Cleanup(func() { stopAppender() }) // before the log closes, when the test fails early

	for range 2 { // the second rebuild works on what the first switched in
		time.Sleep(150 * time.Millisecond)
		began := time.Now()
		require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, []projections.Projection{projections.Users(), projections.Audit()}))
		t.Logf("rebuild took %s, %d events", time.Since(began), e.events(t))
		after, left := indexNames(t, e.url)
		assert.Equal(t, schemaBefore, after, "indexes and constraints keep their names")
		assert.Empty(t, left, "no shadow left behind")
	}
	time.Sleep(150 * time.Millisecond)
	last = stopAppender()
	began := time.Now()
	waitFor(t, r, last)
	t.Logf("catch up took %s", time.Since(began))

	// The live runner still projects, into the switched-in tables.
	id := uuid.New()
	pos := e.append(t, userStream(id), user.Created{UserID: id, Email: id.String() + "@x.org", Name: "After"})
	waitFor(t, r, pos)
	u, err := serving.User(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "After", u.Name)

	got := stopReader()
	t.Log(got[len(got)-1])
	assert.Len(t, got, 1, "queries neither failed nor lost rows: %v", got)

	live := e.dump(t)
	stop()
	t.Logf("live batches abandoned at a switch: %d", strings.Count(logs.String(), "checkpoint moved by another process"))
	audited := 0
	for _, ev := range e.all(t) {
		if projections.Action(ev.Type) != "" {
			audited++
		}
	}
	assert.Len(t, live["audit"], audited, "one audit row per audited event: no gaps, no duplicates")
	fresh := freshStore(t)
	require.NoError(t, projections.Rebuild(ctx, e.es, fresh, projections.All()))
	clean, err := fresh.Dump(ctx)
	require.NoError(t, err)
	assert.Equal(t, clean, live, "the live tables equal a clean rebuild")
	for _, p := range projections.All() {
		assert.Equal(t, pos, checkpoint(t, e, p.Name()), p.Name())
	}
	parked, err := e.rm.Parked(ctx)
	require.NoError(t, err)
	assert.Empty(t, parked)
}

// Two rebuilds of one projection at once take turns; both finish.
func TestConcurrentRebuildsTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, readmodels.DialectPostgres)
	last := e.workload(t, 6)
	other := e.instance(t, "")
	var wg sync.WaitGroup
	for _, rm := range []*readmodels.Store{e.rm, other} {
		wg.Go(func() {
			assert.NoError(t, projections.Rebuild(ctx, e.es, rm, projections.All()))
		})
	}
	wg.Wait()
	for _, p := range projections.All() {
		assert.Equal(t, last, checkpoint(t, e, p.Name()), p.Name())
	}
	fresh := freshStore(t)
	require.NoError(t, projections.Rebuild(ctx, e.es, fresh, projections.All()))
	clean, err := fresh.Dump(ctx)
	require.NoError(t, err)
	assert.Equal(t, clean, e.dump(t))
	_, left := indexNames(t, e.url)
	assert.Empty(t, left)
}

// An event that does not decode is parked by the live Runner; a rebuild
// applies its batch event by event and parks it too, and the tables,
// checkpoints and parked events equal the live ones.
func TestRebuildParksWhatLiveParks(t *testing.T) { eachDialect(t, testRebuildParksWhatLiveParks) }

func testRebuildParksWhatLiveParks(t *testing.T, dialect string) {
	ctx := context.Background()
	e := newEnv(t, dialect)
	r, stop := e.start(t, projections.All(), fast(1))
	e.workload(t, 2)
	bad := uuid.New()
	_, err := e.es.Append(ctx, eventstore.AppendRequest{Stream: userStream(bad), Expected: eventstore.Any,
		Events: []eventstore.EventData{{ID: uuid.Must(uuid.NewV7()), Type: user.TypeCreated, Data: []byte(`{"user_id": 5}`),
			Metadata: []byte(`{"schema_version": 1}`)}}})
	require.NoError(t, err)
	last := e.workload(t, 2)
	waitFor(t, r, last)
	live := e.dump(t)
	stop()
	parkedIDs := func() []string {
		ps, err := e.rm.Parked(ctx)
		require.NoError(t, err)
		var out []string
		for _, p := range ps {
			out = append(out, p.Projection+" "+p.EventID+" "+p.Position.String()+" "+p.EventType+" "+p.Error)
		}
		return out
	}
	liveParked := parkedIDs()
	require.Len(t, liveParked, 3, "users, activation_tokens and audit park it")

	require.NoError(t, projections.Rebuild(ctx, e.es, e.rm, projections.All()))
	assert.Equal(t, live, e.dump(t))
	assert.Equal(t, liveParked, parkedIDs())
	for _, p := range projections.All() {
		assert.Equal(t, last, checkpoint(t, e, p.Name()), p.Name())
	}
}
