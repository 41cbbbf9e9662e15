package readmodels_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/eventstore"
	"evident/readmodels"
)

func mkUser(name string, version int64) readmodels.User {
	return readmodels.User{ID: uuid.New(), Email: name + "@x.org", Name: name, Status: "pending", Version: version,
		CreatedAt: t0, UpdatedAt: t0, Position: eventstore.At(uint64(version))}
}

// catalogue lists the indexes and constraints of the projection tables
// (by table) and any table left over by a rebuild.
func catalogue(t *testing.T, db *sql.DB) (map[string][]string, []string) {
	t.Helper()
	out := map[string][]string{}
	rows, err := db.Query(`SELECT tablename, indexname FROM pg_indexes WHERE schemaname = current_schema()
		UNION ALL SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE connamespace = current_schema()::regnamespace
		ORDER BY 1, 2`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var tbl, name string
		require.NoError(t, rows.Scan(&tbl, &name))
		out[tbl] = append(out[tbl], name)
	}
	require.NoError(t, rows.Err())
	var left []string
	rows2, err := db.Query(`SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%\_rebuild'`)
	require.NoError(t, err)
	defer rows2.Close()
	for rows2.Next() {
		var n string
		require.NoError(t, rows2.Scan(&n))
		left = append(left, n)
	}
	require.NoError(t, rows2.Err())
	return out, left
}

func TestShadowSwitchesInWithTheLiveNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in := instances(t, 1)[0]
	rm := in.rm
	db := openPostgres(t, in.url, "")
	before, _ := catalogue(t, db)
	require.Contains(t, before["users"], "users_pkey")
	require.Contains(t, before["audit"], "audit_pos_commit_pos_prepare_key")

	old := mkUser("old", 1)
	update(t, rm, func(tx *readmodels.Tx) error {
		if err := tx.PutUser(old); err != nil {
			return err
		}
		return tx.SetCheckpoint("users", eventstore.At(5))
	})

	for round := range 2 { // the second rebuild finds the first's schema
		sh, err := rm.NewShadow(ctx, "users", "users")
		require.NoError(t, err)
		assert.Equal(t, "users_rebuild", sh.Name())
		built, caught := mkUser(fmt.Sprint("built", round), 1), mkUser(fmt.Sprint("caught", round), 1)
		update(t, rm, func(tx *readmodels.Tx) error {
			if err := sh.Tx(tx).PutUser(built); err != nil {
				return err
			}
			// Read back through the shadow, as a projection does.
			if _, err := sh.Tx(tx).User(built.ID); err != nil {
				return err
			}
			return tx.AdvanceCheckpoint(sh.Name(), eventstore.Position{}, eventstore.At(3))
		})
		_, err = rm.User(ctx, built.ID)
		require.ErrorIs(t, err, readmodels.ErrNotFound, "the live table is untouched while the shadow fills")
		_, err = rm.User(ctx, old.ID)
		require.NoError(t, err, "the live rows serve until the switch")

		want := eventstore.At(uint64(7 + round))
		require.NoError(t, sh.Switch(ctx, func(tx *readmodels.Tx, from, live eventstore.Position) (eventstore.Position, error) {
			assert.Equal(t, eventstore.At(3), from)
			assert.Equal(t, eventstore.At(uint64(5+2*round)), live)
			return want, tx.PutUser(caught)
		}))

		page, err := rm.Users(ctx, readmodels.UserFilter{})
		require.NoError(t, err)
		var ids []uuid.UUID
		for _, u := range page.Items {
			ids = append(ids, u.ID)
		}
		assert.ElementsMatch(t, []uuid.UUID{built.ID, caught.ID}, ids, "the shadow's rows, nothing else")
		old = caught
		cp, err := rm.Checkpoint(ctx, "users")
		require.NoError(t, err)
		assert.Equal(t, want, cp)
		cp, err = rm.Checkpoint(ctx, sh.Name())
		require.NoError(t, err)
		assert.True(t, cp.IsZero(), "the shadow's checkpoint is gone")
		after, left := catalogue(t, db)
		assert.Equal(t, before, after, "indexes and constraints keep their names")
		assert.Empty(t, left)
		update(t, rm, func(tx *readmodels.Tx) error { return tx.SetCheckpoint("users", eventstore.At(uint64(5+2*(round+1)))) })
	}
}

func TestShadowDropAndReplacement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in := instances(t, 1)[0]
	rm := in.rm
	db := openPostgres(t, in.url, "")

	first, err := rm.NewShadow(ctx, "audit", "audit")
	require.NoError(t, err)
	second, err := rm.NewShadow(ctx, "audit", "audit") // another rebuild took over
	require.NoError(t, err)
	err = first.Switch(ctx, func(*readmodels.Tx, eventstore.Position, eventstore.Position) (eventstore.Position, error) {
		t.Error("a replaced shadow must not catch up")
		return eventstore.Position{}, nil
	})
	require.ErrorIs(t, err, readmodels.ErrShadowGone)
	require.NoError(t, second.Drop(ctx))
	_, left := catalogue(t, db)
	assert.Empty(t, left)

	_, err = rm.NewShadow(ctx, "audit", "credentials")
	assert.Error(t, err, "only projection tables")
	sqliteRM := newStore(t, readmodels.DialectSQLite)
	_, err = sqliteRM.NewShadow(ctx, "users", "users")
	assert.Error(t, err, "SQLite rebuilds in place")
}

// A live batch whose statement waits on the switch's locks runs against the
// switched-in table once it gets them (its statement was prepared and
// cached before), and commits only if the checkpoint is still where it
// started.
func TestSwitchRedirectsAWaitingLiveBatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		shadow  uint64 // where the switch leaves the checkpoint; the live one is at 5
		commits bool
	}{
		{"shadow ahead: the batch rolls back", 9, false},
		{"shadow level: the batch applies to the new table", 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			in := instances(t, 1)[0]
			rm := in.rm
			db := openPostgres(t, in.url, "")
			update(t, rm, func(tx *readmodels.Tx) error { return tx.SetCheckpoint("users", eventstore.At(5)) })

			// Prepare the live statements on every connection of the pool.
			const conns = 6
			var ready sync.WaitGroup
			ready.Add(conns)
			var warm sync.WaitGroup
			for i := range conns {
				warm.Go(func() {
					update(t, rm, func(tx *readmodels.Tx) error {
						u := mkUser(fmt.Sprint("warm", i), 1)
						if err := tx.PutUser(u); err != nil {
							return err
						}
						_, err := tx.User(u.ID)
						ready.Done()
						ready.Wait()
						return err
					})
				})
			}
			warm.Wait()

			sh, err := rm.NewShadow(ctx, "users", "users")
			require.NoError(t, err)
			locked, release := make(chan struct{}), make(chan struct{})
			switched := make(chan error, 1)
			go func() {
				switched <- sh.Switch(ctx, func(*readmodels.Tx, eventstore.Position, eventstore.Position) (eventstore.Position, error) {
					close(locked)
					<-release
					return eventstore.At(tc.shadow), nil
				})
			}()
			<-locked

			late := mkUser("late", 1)
			batch := make(chan error, 1)
			go func() {
				batch <- rm.Update(ctx, func(tx *readmodels.Tx) error {
					if _, err := tx.User(late.ID); err != readmodels.ErrNotFound {
						return fmt.Errorf("want not found, got %v", err)
					}
					if err := tx.PutUser(late); err != nil {
						return err
					}
					return tx.AdvanceCheckpoint("users", eventstore.At(5), eventstore.At(6))
				})
			}()
			require.Eventually(t, func() bool {
				var n int
				require.NoError(t, db.QueryRow(`SELECT count(*) FROM pg_stat_activity
					WHERE application_name = $1 AND wait_event_type = 'Lock' AND query LIKE '%FROM users WHERE id%'`, in.app).Scan(&n))
				return n > 0
			}, 5*time.Second, 5*time.Millisecond, "the live batch waits for the switch")
			close(release)
			require.NoError(t, <-switched)

			err = <-batch
			cp, cerr := rm.Checkpoint(ctx, "users")
			require.NoError(t, cerr)
			_, uerr := rm.User(ctx, late.ID)
			if tc.commits {
				require.NoError(t, err)
				assert.NoError(t, uerr, "the batch wrote to the switched-in table")
				assert.Equal(t, eventstore.At(6), cp)
			} else {
				require.ErrorIs(t, err, readmodels.ErrCheckpointMoved)
				assert.ErrorIs(t, uerr, readmodels.ErrNotFound, "the batch rolled back")
				assert.Equal(t, eventstore.At(tc.shadow), cp)
			}
			page, err := rm.Users(ctx, readmodels.UserFilter{})
			require.NoError(t, err)
			for _, u := range page.Items {
				assert.Equal(t, "late", u.Name, "the live rows went with the old table")
			}
		})
	}
}

// DeferIndexes leaves a shadow only its constraints and the indexes a
// replay looks rows up by; the switch builds the others, under their live
// names.
func TestShadowDefersIndexesUntilTheSwitch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in := instances(t, 1)[0]
	rm := in.rm
	db := openPostgres(t, in.url, "")
	before, _ := catalogue(t, db)

	tokens, err := rm.NewShadow(ctx, "activation_tokens", "activation_tokens")
	require.NoError(t, err)
	audit, err := rm.NewShadow(ctx, "audit", "audit")
	require.NoError(t, err)
	full, _ := catalogue(t, db)
	for _, sh := range []*readmodels.Shadow{tokens, audit} {
		require.NoError(t, sh.DeferIndexes(ctx))
	}
	deferred, _ := catalogue(t, db)
	leads := func(table string) []string {
		rows, err := db.Query(`SELECT a.attname FROM pg_index i
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
			WHERE i.indrelid = $1::regclass ORDER BY 1`, table)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			out = append(out, c)
		}
		require.NoError(t, rows.Err())
		return out
	}
	assert.Equal(t, []string{"token_hash", "user_id"}, leads("activation_tokens_rebuild"), "the key and the index replays read by")
	assert.Equal(t, []string{"event_id", "pos_commit"}, leads("audit_rebuild"), "the constraints only")
	assert.Less(t, len(deferred["audit_rebuild"]), len(full["audit_rebuild"]))

	for _, sh := range []*readmodels.Shadow{tokens, audit} {
		require.NoError(t, sh.Switch(ctx, func(_ *readmodels.Tx, from, live eventstore.Position) (eventstore.Position, error) {
			return live, nil
		}))
	}
	after, left := catalogue(t, db)
	assert.Equal(t, before, after, "every index is back, under its live name")
	assert.Empty(t, left)
}

// Prepare builds the deferred indexes of several shadows at once and
// analyzes them (audit on the columns its queries use), before any switch;
// a switch then has nothing left to build. A replaced shadow fails it.
func TestShadowPrepareBuildsAndAnalyzesEveryShadow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in := instances(t, 1)[0]
	rm := in.rm
	db := openPostgres(t, in.url, "")

	users, err := rm.NewShadow(ctx, "users", "users")
	require.NoError(t, err)
	audit, err := rm.NewShadow(ctx, "audit", "audit")
	require.NoError(t, err)
	full, _ := catalogue(t, db)
	for _, sh := range []*readmodels.Shadow{users, audit} {
		require.NoError(t, sh.DeferIndexes(ctx))
	}
	_, err = db.Exec(`INSERT INTO audit_rebuild SELECT md5(i::text), 'user.created', 'a', 'user', 'u' || i % 7, 'actor' || i % 3,
			'user_created', 'user', 'a', '{}', '{}', i, i, i FROM generate_series(1, 200) i`)
	require.NoError(t, err)
	_, err = db.Exec(`INSERT INTO users_rebuild SELECT md5(i::text), i || '@example.com', 'n', '[]', 'active', 1, i, i, NULL, NULL, '1'
			FROM generate_series(1, 50) i`)
	require.NoError(t, err)

	require.NoError(t, rm.Prepare(ctx, users, audit))
	prepared, _ := catalogue(t, db)
	for _, tbl := range []string{"users_rebuild", "audit_rebuild"} {
		assert.Equal(t, full[tbl], prepared[tbl], "every index of %s is built", tbl)
	}
	analyzed := func(table string) []string {
		rows, err := db.Query(`SELECT attname FROM pg_stats WHERE schemaname = current_schema() AND tablename = $1 ORDER BY 1`, table)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var c string
			require.NoError(t, rows.Scan(&c))
			out = append(out, c)
		}
		require.NoError(t, rows.Err())
		return out
	}
	assert.Equal(t, []string{"action", "actor_id", "occurred_at", "pos_commit", "pos_prepare", "user_id"}, analyzed("audit_rebuild"),
		"the columns audit queries filter and order by")
	assert.Len(t, analyzed("users_rebuild"), 11, "every column")

	for _, sh := range []*readmodels.Shadow{users, audit} {
		require.NoError(t, sh.Switch(ctx, func(_ *readmodels.Tx, from, live eventstore.Position) (eventstore.Position, error) {
			return live, nil
		}))
	}
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM audit WHERE actor_id = 'actor1'`).Scan(&n))
	assert.Equal(t, 67, n)

	again, err := rm.NewShadow(ctx, "users", "users")
	require.NoError(t, err)
	_, err = rm.NewShadow(ctx, "users", "users") // replaces again
	require.NoError(t, err)
	assert.ErrorIs(t, rm.Prepare(ctx, again), readmodels.ErrShadowGone)
}
