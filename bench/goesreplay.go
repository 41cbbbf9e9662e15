package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/modernice/goes/backend/postgres"
	"github.com/modernice/goes/codec"
	"github.com/modernice/goes/event"
	"github.com/modernice/goes/event/query"

	"evident/eventstore"
)

// goesReplay is github.com/modernice/goes' replay of the same log: the
// events of Evident's log copied into goes' PostgreSQL store (untimed), then
// every event read back through its event.Store.Query in time order and
// decoded by its codec, which is what a goes projection job does before it
// applies an event. The apply is a count per aggregate in memory: goes has
// no read-model writer of its own, so this is its replay with nothing
// written, a lower bound of what a goes rebuild costs.
type goesReplay struct {
	store *postgres.EventStore
	close func()
}

func openGoesReplay(ctx context.Context, w where, src eventstore.Store) (*goesReplay, int, error) {
	sc, pool, err := w.pg.freshPool(ctx, 4)
	if err != nil {
		return nil, 0, err
	}
	reg := codec.New()
	g := &goesReplay{close: func() { pool.Close(); sc.Drop() }}
	registered := map[string]bool{}
	g.store = postgres.NewEventStore(reg, postgres.Pool(pool))
	if err := g.store.Connect(ctx); err != nil {
		g.close()
		return nil, 0, fmt.Errorf("goes connect: %w", err)
	}
	var after eventstore.Position
	n := 0
	for {
		evs, err := src.ReadAll(ctx, after, 1000)
		if err != nil {
			g.close()
			return nil, 0, err
		}
		if len(evs) == 0 {
			return g, n, nil
		}
		batch := make([]event.Event, len(evs))
		for i, e := range evs {
			if !registered[e.Type] {
				codec.Register[rawJSON](reg, e.Type)
				registered[e.Type] = true
			}
			p := payload{ID: e.ID, Type: e.Type, Data: e.Data, Meta: e.Metadata}
			name, id := goesAggregate(e.Stream)
			batch[i] = event.New[any](e.Type, rawJSON(p.combined()), event.ID(e.ID),
				event.Time(e.RecordedAt.Add(time.Duration(n+i))), // strictly increasing, so time order is log order
				event.Aggregate(id, name, int(e.Version+1)))
		}
		// One insert per stream version order is what goes requires; the
		// log's order keeps each stream's versions ascending.
		if err := g.store.Insert(ctx, batch...); err != nil {
			g.close()
			return nil, 0, fmt.Errorf("goes copy: %w", err)
		}
		n += len(evs)
		after = evs[len(evs)-1].Position
	}
}

// goesAggregate maps a stream name "kind-rest" to goes' aggregate name and
// UUID (a name-based UUID when rest is not one).
func goesAggregate(stream string) (string, uuid.UUID) {
	name, rest, _ := strings.Cut(stream, "-")
	id, err := uuid.Parse(rest)
	if err != nil {
		id = uuid.NewSHA1(uuid.NameSpaceURL, []byte(stream))
	}
	return name, id
}

func (g *goesReplay) replay(ctx context.Context) measure {
	start := time.Now()
	evs, errs, err := g.store.Query(ctx, query.New(query.SortBy(event.SortTime, event.SortAsc)))
	if err != nil {
		return measure{Err: err}
	}
	seen := map[uuid.UUID]int{}
	n := 0
	for evs != nil || errs != nil {
		select {
		case e, ok := <-evs:
			if !ok {
				evs = nil
				continue
			}
			id, _, _ := e.Aggregate()
			seen[id]++
			n++
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			return measure{Err: err}
		}
	}
	return measure{Value: float64(n) / time.Since(start).Seconds()}
}

func (g *goesReplay) Close() { g.close() }
