package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"evident/eventstore"

	"github.com/jackc/pgx/v5"
)

// ShadowSuffix ends the name of a shadow table (users_rebuild) and of a
// shadow's checkpoint key and parked events (users_rebuild).
const ShadowSuffix = "_rebuild"

// ErrShadowGone means a shadow's tables were dropped or replaced since it was
// made: another rebuild of the same projection started. Its work is lost.
var ErrShadowGone = errors.New("readmodels: shadow tables were replaced")

// switchLockTimeout bounds how long Switch waits for the live tables. While
// it waits, new queries of those tables queue behind it; past it the switch
// fails with ErrUnavailable and is worth retrying.
const switchLockTimeout = 2 * time.Second

// Shadow is a rebuild of one projection's tables beside the live ones, on
// PostgreSQL: the projection is replayed into <table>_rebuild (Tx routes its
// writes there) while the live tables keep serving, and Switch swaps the
// shadow in atomically. Its checkpoint and parked events live under Name
// until the switch; a process that dies mid-rebuild leaves them and the
// shadow tables behind for the next NewShadow to drop.
type Shadow struct {
	s          *Store
	projection string
	tables     []string          // live names
	names      map[string]string // live name → shadow name
	oids       map[string]int64  // shadow name → OID as made, to tell a later rebuild's apart
	// deferred are the CREATE INDEX statements DeferIndexes put off, by
	// shadow table, for Prepare.
	deferred map[string][]string
	analyzed bool // Prepare ran to the end
}

// NewShadow drops what an earlier rebuild of projection left behind and
// creates an empty shadow of each of its tables (CREATE TABLE … (LIKE …
// INCLUDING ALL): same columns, defaults, constraints and indexes). tables
// must be projection tables (ProjectionTables). PostgreSQL only: on SQLite a
// rebuild clears the live tables (Reset) while nothing serves them.
//
// Two rebuilds of one projection must not run at once (the second drops the
// first's shadow); callers serialise them, e.g. with a lease. Switch refuses
// a shadow that was replaced (ErrShadowGone).
func (s *Store) NewShadow(ctx context.Context, projection string, tables ...string) (*Shadow, error) {
	if s.dialect != DialectPostgres {
		return nil, fmt.Errorf("readmodels: shadow tables need PostgreSQL, not %s", s.dialect)
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("readmodels: shadow of %s: no tables", projection)
	}
	sh := &Shadow{s: s, projection: projection, tables: slices.Clone(tables),
		names: map[string]string{}, oids: map[string]int64{}, deferred: map[string][]string{}}
	for _, t := range tables {
		if !isProjectionTable(t) {
			return nil, fmt.Errorf("readmodels: shadow of %s: %q is not a projection table", projection, t)
		}
		sh.names[t] = t + ShadowSuffix
	}
	err := s.Update(ctx, func(tx *Tx) error {
		if err := sh.forget(tx); err != nil {
			return err
		}
		for _, t := range sh.tables {
			st := sh.names[t]
			// t and st are fixed names checked above.
			if _, err := tx.tx.ExecContext(ctx, `CREATE TABLE `+st+` (LIKE `+t+` INCLUDING ALL)`); err != nil {
				return fmt.Errorf("readmodels: create shadow %s: %w", st, classify(err))
			}
			var oid int64
			if err := tx.tx.QueryRowContext(ctx, `SELECT $1::text::regclass::oid::bigint`, st).Scan(&oid); err != nil {
				return fmt.Errorf("readmodels: create shadow %s: %w", st, classify(err))
			}
			sh.oids[st] = oid
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sh, nil
}

// Name is the shadow's checkpoint key and the projection its parked events
// are recorded under until the switch: the projection's name + ShadowSuffix.
func (sh *Shadow) Name() string { return sh.projection + ShadowSuffix }

// Tx returns a Tx in tx's transaction whose projection writes and reads go
// to the shadow tables. Use it for the projection's rows only: checkpoints
// and parking belong on tx itself.
func (sh *Shadow) Tx(tx *Tx) *Tx {
	return &Tx{ctx: tx.ctx, tx: tx.tx, q: tx.q, now: tx.now, dialect: tx.dialect, shadows: sh.names, batch: tx.batch}
}

// Bulk returns a Bulk in b's transaction whose reads and writes go to the
// shadow tables (COPY for audit rows).
func (sh *Shadow) Bulk(b *Bulk) *Bulk {
	return &Bulk{r: b.r, tx: sh.Tx(b.tx), conn: b.conn, local: b.local}
}

// lookupColumns are the columns, besides primary keys and unique
// constraints, by which a replay or a catch-up looks rows of a table up
// (Bulk.ActivationTokens, Tx.ChangeActivationTokens): DeferIndexes keeps
// the indexes that lead with them.
var lookupColumns = map[string]string{"activation_tokens": "user_id"}

// analyzeColumns are, for the tables whose other columns are costly to
// ANALYZE and never filtered on (audit: the records' JSON and ids), the
// columns the queries filter and order by (queries.go): Prepare analyzes
// only these, half the work of the whole table. A partial ANALYZE leaves
// the table's count of changed rows as it is, so autovacuum analyzes it
// whole soon after it serves.
var analyzeColumns = map[string]string{
	"audit": "user_id, actor_id, action, occurred_at, pos_commit, pos_prepare",
}

// DeferIndexes drops the shadow's secondary indexes that no replay looks
// rows up by, to build them again, each in one pass over the filled table,
// in Prepare (Switch calls it): cheaper than keeping them up to date
// row by row while a replay fills the table. Constraints and the indexes a
// replay reads through stay. Until Prepare the shadow answers only
// the replay's lookups quickly; nothing else reads it.
func (sh *Shadow) DeferIndexes(ctx context.Context) error {
	return sh.s.Update(ctx, func(tx *Tx) error {
		for _, t := range sh.tables {
			st := sh.names[t]
			rows, err := tx.tx.QueryContext(ctx, `SELECT c.relname, pg_get_indexdef(i.indexrelid), a.attname
				FROM pg_index i
				JOIN pg_class c ON c.oid = i.indexrelid
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
				WHERE i.indrelid = $1::text::regclass
				  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
				ORDER BY c.relname`, st)
			if err != nil {
				return fmt.Errorf("readmodels: defer indexes of %s: %w", st, classify(err))
			}
			var names, defs []string
			for rows.Next() {
				var name, def, lead string
				if err := rows.Scan(&name, &def, &lead); err != nil {
					rows.Close()
					return fmt.Errorf("readmodels: defer indexes of %s: %w", st, classify(err))
				}
				if lead != lookupColumns[t] {
					names, defs = append(names, name), append(defs, def)
				}
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("readmodels: defer indexes of %s: %w", st, classify(err))
			}
			for _, n := range names {
				if _, err := tx.tx.ExecContext(ctx, `DROP INDEX `+pgx.Identifier{n}.Sanitize()); err != nil {
					return fmt.Errorf("readmodels: defer index %s: %w", n, classify(err))
				}
			}
			sh.deferred[st] = append(sh.deferred[st], defs...)
		}
		return nil
	})
}

// prepareParallelism bounds the statements Prepare runs at once: index
// builds of different tables, and of one table, do not wait for each other
// (CREATE INDEX takes a lock that lets others build), so a database with
// several cores builds them side by side.
const prepareParallelism = 4

// Prepare makes filled shadows ready to serve: it builds the indexes
// DeferIndexes put off and then ANALYZEs each table, so that the planner
// knows it the moment it serves. The statements of all the shadows run side
// by side on the Store's pool (at most prepareParallelism at once), each
// table's ANALYZE after its own indexes; the slowest table, not the sum of
// all, sets how long it takes. Switch prepares a shadow that was not; a
// prepared one is not prepared again. It fails with ErrShadowGone when a
// shadow was replaced. Each shadow must be of this Store.
func (s *Store) Prepare(ctx context.Context, shs ...*Shadow) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		slot = make(chan struct{}, prepareParallelism)
	)
	exec := func(sh *Shadow, q string) error {
		select {
		case slot <- struct{}{}:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		defer func() { <-slot }()
		if _, err := s.write.ExecContext(ctx, q); err != nil {
			if isUndefinedTable(err) {
				return fmt.Errorf("readmodels: prepare %s: %w", sh.projection, ErrShadowGone)
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("readmodels: prepare %s: %s: %w", sh.projection, q, classify(err))
		}
		return nil
	}
	var todo []*Shadow
	for _, sh := range shs {
		if sh.analyzed {
			continue
		}
		if err := sh.check(ctx); err != nil {
			return err
		}
		todo = append(todo, sh)
	}
	for _, sh := range todo {
		for _, t := range sh.tables {
			st := sh.names[t]
			wg.Go(func() {
				var built sync.WaitGroup
				mu.Lock()
				defs := slices.Clone(sh.deferred[st])
				mu.Unlock()
				for _, q := range defs {
					built.Go(func() {
						if err := exec(sh, q); err != nil {
							cancel(err) // the first error is the cause
							return
						}
						mu.Lock()
						defer mu.Unlock()
						sh.deferred[st] = slices.DeleteFunc(sh.deferred[st], func(d string) bool { return d == q })
					})
				}
				built.Wait()
				if ctx.Err() != nil {
					return
				}
				q := `ANALYZE ` + st
				if cols, ok := analyzeColumns[t]; ok {
					q += ` (` + cols + `)`
				}
				if err := exec(sh, q); err != nil {
					cancel(err)
				}
			})
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	for _, sh := range todo {
		sh.analyzed = true
	}
	return nil
}

// check fails with ErrShadowGone when a shadow table is not the one
// NewShadow made.
func (sh *Shadow) check(ctx context.Context) error {
	for st, want := range sh.oids {
		var oid int64
		err := sh.s.write.QueryRowContext(ctx, `SELECT to_regclass($1)::oid::bigint`, st).Scan(&oid)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("readmodels: prepare %s: %w", sh.projection, classify(err))
		}
		if oid != want {
			return fmt.Errorf("readmodels: prepare %s: %w", sh.projection, ErrShadowGone)
		}
	}
	return nil
}

// Switch swaps the shadow in for the live tables, in one transaction:
//
//  1. lock the live and shadow tables (ACCESS EXCLUSIVE: queries of the live
//     tables wait until the commit, for as long as the catch-up takes) and
//     the projection's checkpoint row;
//  2. catchUp applies events to the shadow from its checkpoint from until
//     at least live, the live checkpoint, and returns where it stopped;
//  3. drop the live tables, rename the shadows and their indexes (and so
//     their constraints) to the live names;
//  4. move the live checkpoint from live to that position (the conditional
//     update: a live worker whose batch started elsewhere then fails with
//     ErrCheckpointMoved, rolls back and starts again from the new
//     checkpoint), and make the shadow's parked events the projection's.
//
// A live worker's statement waiting on the lock runs against the new tables
// once it gets it: PostgreSQL resolves the table name again, in cached
// plans too. So a batch either commits before the switch (and is in the
// live checkpoint the catch-up reaches) or starts after it.
//
// Before the transaction it prepares the shadow (Prepare) unless that was
// done. Errors: an error from catchUp as it is;
// ErrShadowGone; ErrUnavailable when the locks were not granted within a
// few seconds (a long query holds the tables) or the database failed;
// ErrCheckpointMoved when the checkpoint changed between the lock and the
// update (no live row existed and a worker wrote the first). All but
// ErrShadowGone are worth retrying after catching the shadow up again.
func (sh *Shadow) Switch(ctx context.Context, catchUp func(tx *Tx, from, live eventstore.Position) (eventstore.Position, error)) error {
	if err := sh.s.Prepare(ctx, sh); err != nil {
		return err
	}
	return sh.s.Update(ctx, func(tx *Tx) error {
		live, err := sh.lock(tx)
		if err != nil {
			return err
		}
		from, err := tx.Checkpoint(sh.Name())
		if err != nil {
			return err
		}
		pos, err := catchUp(sh.Tx(tx), from, live)
		if err != nil {
			return err
		}
		if pos.Less(live) {
			return fmt.Errorf("readmodels: switch %s: the shadow reached %s, not the live checkpoint %s", sh.projection, pos, live)
		}
		if err := sh.swap(tx); err != nil {
			return err
		}
		if err := tx.AdvanceCheckpoint(sh.projection, live, pos); err != nil {
			return err
		}
		if _, err := tx.tx.ExecContext(tx.ctx, `DELETE FROM checkpoints WHERE name = $1`, sh.Name()); err != nil {
			return fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
		}
		if _, err := tx.tx.ExecContext(tx.ctx, `DELETE FROM parked_events WHERE projection = $1`, sh.projection); err != nil {
			return fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
		}
		if _, err := tx.tx.ExecContext(tx.ctx, `UPDATE parked_events SET projection = $1 WHERE projection = $2`, sh.projection, sh.Name()); err != nil {
			return fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
		}
		return nil
	})
}

// lock takes the tables and the checkpoint row, checks that the shadows are
// still this Shadow's, and returns the live checkpoint.
func (sh *Shadow) lock(tx *Tx) (eventstore.Position, error) {
	ctx := tx.ctx
	if _, err := tx.tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true)`,
		fmt.Sprint(switchLockTimeout.Milliseconds())); err != nil {
		return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
	}
	names := slices.Clone(sh.tables)
	for _, t := range sh.tables {
		names = append(names, sh.names[t])
	}
	// Fixed names, checked by NewShadow.
	if _, err := tx.tx.ExecContext(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		if isUndefinedTable(err) {
			return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: %w", sh.projection, ErrShadowGone)
		}
		return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: lock: %w", sh.projection, classify(err))
	}
	for st, want := range sh.oids {
		var oid int64
		if err := tx.tx.QueryRowContext(ctx, `SELECT $1::text::regclass::oid::bigint`, st).Scan(&oid); err != nil {
			return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
		}
		if oid != want {
			return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: %w", sh.projection, ErrShadowGone)
		}
	}
	var s string
	err := tx.tx.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE name = $1 FOR UPDATE`, sh.projection).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("readmodels: switch %s: checkpoint: %w", sh.projection, classify(err))
	}
	return parsePosition(s)
}

// swap drops the live tables and gives the shadows, their indexes and their
// constraints the live names, so that the next rebuild (and a reader of the
// catalogue) finds the schema as the migrations made it.
func (sh *Shadow) swap(tx *Tx) error {
	ctx := tx.ctx
	for _, t := range sh.tables {
		st := sh.names[t]
		renames, err := indexRenames(tx, t, st)
		if err != nil {
			return fmt.Errorf("readmodels: switch %s: %w", sh.projection, err)
		}
		for _, q := range []string{`DROP TABLE ` + t, `ALTER TABLE ` + st + ` RENAME TO ` + t} {
			if _, err := tx.tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("readmodels: switch %s: %w", sh.projection, classify(err))
			}
		}
		for from, to := range renames {
			q := `ALTER INDEX ` + pgx.Identifier{from}.Sanitize() + ` RENAME TO ` + pgx.Identifier{to}.Sanitize()
			if _, err := tx.tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("readmodels: switch %s: rename index %s: %w", sh.projection, from, classify(err))
			}
		}
	}
	return nil
}

// indexRenames pairs each index of shadow with the index of live it was
// copied from (same kind and definition; LIKE … INCLUDING ALL names copies
// after their table) and returns shadow name → live name.
func indexRenames(tx *Tx, live, shadow string) (map[string]string, error) {
	li, err := indexes(tx, live)
	if err != nil {
		return nil, err
	}
	si, err := indexes(tx, shadow)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for key, names := range si {
		if len(names) != len(li[key]) {
			return nil, fmt.Errorf("the indexes of %s do not match those of %s (%s)", shadow, live, key)
		}
		for i, n := range names {
			if n != li[key][i] {
				out[n] = li[key][i]
			}
		}
	}
	if len(li) != len(si) {
		return nil, fmt.Errorf("the indexes of %s do not match those of %s", shadow, live)
	}
	return out, nil
}

// indexes returns the index names of table by what they are: constraint
// kind, primary, unique and the definition from USING on (the part that
// names neither the index nor the table), names sorted.
func indexes(tx *Tx, table string) (map[string][]string, error) {
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT c.relname,
			concat_ws('|', coalesce(k.contype::text, ''), i.indisprimary, i.indisunique,
				regexp_replace(pg_get_indexdef(i.indexrelid), '^.*? USING ', ''))
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid
		LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
		WHERE i.indrelid = $1::text::regclass
		ORDER BY c.relname`, table)
	if err != nil {
		return nil, fmt.Errorf("indexes of %s: %w", table, classify(err))
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var name, key string
		if err := rows.Scan(&name, &key); err != nil {
			return nil, fmt.Errorf("indexes of %s: %w", table, classify(err))
		}
		out[key] = append(out[key], name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("indexes of %s: %w", table, classify(err))
	}
	return out, nil
}

// Drop removes the shadow tables, checkpoint and parked events: a rebuild
// that will not switch cleans up after itself.
func (sh *Shadow) Drop(ctx context.Context) error {
	return sh.s.Update(ctx, sh.forget)
}

// forget drops the shadow tables, checkpoint and parked events, wherever
// they came from.
func (sh *Shadow) forget(tx *Tx) error {
	for _, t := range sh.tables {
		if _, err := tx.tx.ExecContext(tx.ctx, `DROP TABLE IF EXISTS `+sh.names[t]); err != nil {
			return fmt.Errorf("readmodels: drop shadow %s: %w", sh.names[t], classify(err))
		}
	}
	if _, err := tx.tx.ExecContext(tx.ctx, `DELETE FROM checkpoints WHERE name = $1`, sh.Name()); err != nil {
		return fmt.Errorf("readmodels: drop shadow of %s: %w", sh.projection, classify(err))
	}
	if _, err := tx.tx.ExecContext(tx.ctx, `DELETE FROM parked_events WHERE projection = $1`, sh.Name()); err != nil {
		return fmt.Errorf("readmodels: drop shadow of %s: %w", sh.projection, classify(err))
	}
	return nil
}

// Dialect is the Store's database: DialectSQLite or DialectPostgres.
func (s *Store) Dialect() string { return s.dialect }

func isUndefinedTable(err error) bool {
	var pe interface{ SQLState() string }
	return errors.As(err, &pe) && pe.SQLState() == "42P01"
}
