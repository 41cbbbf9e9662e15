// Command pgload writes a long event log into an Evident PostgreSQL schema
// through the product's own command handler, as fast as it can, for the
// black-box tests that need a long catch-up (tests/postgres_cases_test.go).
// No server may run on the schema meanwhile. It is built without the race
// detector, which would make writing 100k events take minutes.
//
//	pgload -url postgres://…?search_path=… -events 100000 -clients 16
//
// It prints {"events": N, "users": U} (events appended, users registered).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"evident/commands"
	"evident/domain/user"
	"evident/eventstore/postgres"
	"evident/readmodels"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/crypto/bcrypt"
)

func main() {
	url := flag.String("url", "", "PostgreSQL URL of the schema (search_path set)")
	events := flag.Int("events", 100_000, "write at least this many events")
	clients := flag.Int("clients", 16, "concurrent writers")
	prefix := flag.String("prefix", "catchup", "local part prefix of the e-mail addresses")
	flag.Parse()
	if err := run(context.Background(), *url, *events, *clients, *prefix); err != nil {
		fmt.Fprintln(os.Stderr, "pgload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, n, clients int, prefix string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	events, err := postgres.New(ctx, pool)
	if err != nil {
		return err
	}
	defer events.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	rm, err := readmodels.Open(ctx, readmodels.DialectPostgres, db, db)
	if err != nil {
		return err
	}
	if err := rm.Migrate(ctx); err != nil {
		return err
	}
	h := commands.NewHandler(events, rm, nil, nil, commands.Options{PasswordCost: bcrypt.MinCost})

	var (
		written, users atomic.Int64
		mu             sync.Mutex
		first          error
		wg             sync.WaitGroup
	)
	for c := range clients {
		wg.Go(func() {
			for i := 0; written.Load() < int64(n); i++ {
				k, err := life(ctx, h, fmt.Sprintf("%s-%d-%d", prefix, c, i))
				written.Add(int64(k))
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				users.Add(1)
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]int64{"events": written.Load(), "users": users.Load()})
}

// life registers one user and takes it through most of its states; it
// returns how many events it appended.
func life(ctx context.Context, h *commands.Handler, local string) (int, error) {
	meta := commands.Meta{ActorID: commands.System}
	res, err := h.Register(ctx, meta, commands.RegisterInput{Email: local + "@example.test", Name: "Catch Up " + local})
	if err != nil {
		return 0, fmt.Errorf("register %s: %w", local, err)
	}
	id, sum := res.UserID, res.Appended
	name := "Caught Up " + local
	steps := []func() (commands.Result, error){
		func() (commands.Result, error) {
			_, err := h.RequestActivation(ctx, meta, id, nil)
			return commands.Result{Appended: 1}, err
		},
		func() (commands.Result, error) { return h.Activate(ctx, meta, id, user.MethodAdmin, nil) },
		func() (commands.Result, error) {
			return h.Update(ctx, meta, id, commands.UpdateInput{Name: &name}, nil)
		},
		func() (commands.Result, error) { return h.Deactivate(ctx, meta, id, "catch-up", nil) },
		func() (commands.Result, error) { return h.Activate(ctx, meta, id, user.MethodAdmin, nil) },
		func() (commands.Result, error) { return h.Suspend(ctx, meta, id, "catch-up", nil) },
	}
	for _, st := range steps {
		r, err := st()
		if err != nil {
			return sum, fmt.Errorf("user %s: %w", id, err)
		}
		sum += r.Appended
	}
	return sum, nil
}
