package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/eventstore/postgres"
	"evident/eventstore/sqlite"
	"evident/internal/pgtest"
	"evident/internal/sqlitedb"
	"evident/projections"
	"evident/readmodels"
)

// BenchmarkRebuild rebuilds every read model from a log of user lives (as
// the bench module's replay scenario writes them) and reports the bytes and
// allocations per replayed event, on each store (its event log and read
// models in the same database):
//
//	go test ./projections -run '^$' -bench Rebuild -benchtime 3x
func BenchmarkRebuild(b *testing.B) {
	for _, dialect := range []string{readmodels.DialectSQLite, readmodels.DialectPostgres} {
		b.Run(dialect, func(b *testing.B) { benchRebuild(b, dialect, 20000) })
	}
}

func benchRebuild(b *testing.B, dialect string, events int) {
	ctx := context.Background()
	defer projections.SetReplayBatch(projections.DefaultReplayBatch)()
	db, err := sqlitedb.Open(filepath.Join(b.TempDir(), "evident.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var (
		es interface {
			projections.Source
			eventstore.Store
		}
		rm *readmodels.Store
	)
	if dialect == readmodels.DialectPostgres {
		pool, err := pgxpool.New(ctx, pgtest.URL(b))
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		pes, err := postgres.New(ctx, pool)
		if err != nil {
			b.Fatal(err)
		}
		defer pes.Close()
		es = pes
		sdb := stdlib.OpenDBFromPool(pool)
		defer sdb.Close()
		if rm, err = readmodels.Open(ctx, dialect, sdb, sdb); err != nil {
			b.Fatal(err)
		}
	} else {
		ses, err := sqlite.New(db)
		if err != nil {
			b.Fatal(err)
		}
		defer ses.Close()
		es = ses
		if rm, err = readmodels.Open(ctx, dialect, db.Write, db.Read); err != nil {
			b.Fatal(err)
		}
	}
	if err := rm.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	n := userLives(b, es, events)
	b.ReportAllocs()
	b.ResetTimer()
	var bytes, allocs uint64
	for b.Loop() {
		b.StopTimer()
		for _, p := range projections.All() {
			if err := rm.Reset(ctx, p.Name(), p.(projections.Tabled).Tables()...); err != nil {
				b.Fatal(err)
			}
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		b.StartTimer()
		if err := projections.Rebuild(ctx, es, rm, projections.All()); err != nil {
			b.Fatal(err)
		}
		runtime.ReadMemStats(&m1)
		bytes += m1.TotalAlloc - m0.TotalAlloc
		allocs += m1.Mallocs - m0.Mallocs
	}
	b.ReportMetric(float64(bytes)/float64(b.N)/float64(n), "B/event")
	b.ReportMetric(float64(allocs)/float64(b.N)/float64(n), "allocs/event")
}

// userLives appends about n events of user lives, users interleaved in
// blocks of 100, and returns how many it appended.
func userLives(b *testing.B, es eventstore.Store, n int) int {
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	count := 0
	ev := func(actor string, e interface{ EventType() string }) eventstore.EventData {
		id := uuid.Must(uuid.NewV7())
		at = at.Add(time.Second)
		count++
		md, _ := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: at, ActorID: actor, CorrelationID: id.String(), SchemaVersion: 1})
		data, _ := json.Marshal(e)
		return eventstore.EventData{ID: id, Type: e.EventType(), Data: data, Metadata: md}
	}
	const block = 100
	for first := 0; count < n; first += block {
		ids, sessions := make([]uuid.UUID, block), make([]uuid.UUID, block)
		for i := range ids {
			ids[i], sessions[i] = uuid.Must(uuid.NewV7()), uuid.New()
		}
		phases := []func(i int, id uuid.UUID) []eventstore.AppendRequest{
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				addr := fmt.Sprintf("user-%d@example.com", first+i)
				return []eventstore.AppendRequest{
					{Stream: userStream(id), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("anonymous",
						user.Created{UserID: id, Email: addr, Name: fmt.Sprintf("User %d", first+i), Roles: []string{user.RoleMember}})}},
					{Stream: email.Stream(addr), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("anonymous", email.Claimed{UserID: id})}},
				}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: userStream(id), Expected: 0, Events: []eventstore.EventData{ev("admin",
					user.ActivationRequested{UserID: id, TokenHash: "h-" + id.String(), ExpiresAt: at.Add(24 * time.Hour), RequestedBy: "admin"})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: userStream(id), Expected: 1, Events: []eventstore.EventData{ev(id.String(),
					user.Activated{UserID: id, ActivatedBy: id.String(), Method: user.MethodToken, TokenHash: "h-" + id.String()})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: sessionStream(sessions[i]), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev(id.String(),
					session.LoggedIn{SessionID: sessions[i], UserID: id, TokenHash: "s-" + sessions[i].String(), ExpiresAt: at.Add(24 * time.Hour)})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: sessionStream(sessions[i]), Expected: 0, Events: []eventstore.EventData{ev(id.String(),
					session.LoggedOut{SessionID: sessions[i], UserID: id})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				name := fmt.Sprintf("User %d (renamed)", first+i)
				return []eventstore.AppendRequest{{Stream: userStream(id), Expected: 2, Events: []eventstore.EventData{ev("admin",
					user.Updated{UserID: id, Name: &name, UpdatedBy: "admin"})}}}
			},
		}
		for _, phase := range phases {
			var reqs []eventstore.AppendRequest
			for i, id := range ids {
				reqs = append(reqs, phase(i, id)...)
			}
			if _, err := es.Append(ctx, reqs...); err != nil {
				b.Fatal(err)
			}
		}
	}
	return count
}
