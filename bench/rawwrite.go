package main

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"evident/projections"
	"evident/readmodels"
)

// rawSource names the copy of a read-model table that the raw write reads.
func rawSource(table string) string { return "bench_raw_" + table }

// keepRebuilt copies the rows a rebuild left in the four read-model tables
// into tables of their own (untimed), for the raw write, and returns how
// many rows they hold. They stay in the database, not on the heap, which
// the memory rows measure.
func keepRebuilt(ctx context.Context, a *evidentApp) (int, error) {
	db, n := writeDB(a), 0
	for _, t := range readmodels.ProjectionTables {
		for _, q := range []string{`DROP TABLE IF EXISTS ` + rawSource(t), `CREATE TABLE ` + rawSource(t) + ` AS SELECT * FROM ` + t} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return 0, err
			}
		}
		var c int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+rawSource(t)).Scan(&c); err != nil {
			return 0, err
		}
		n += c
	}
	return n, nil
}

// rawWrite writes the kept rows (keepRebuilt) into the emptied read-model
// tables, their indexes in place, with one INSERT … SELECT per table in one
// transaction, and returns events per second of the log they came from:
// the ceiling of a rebuild's writes alone, with no log read, no decoding,
// no row sent from the client, no row read back and no upsert.
func rawWrite(ctx context.Context, a *evidentApp, events int) measure {
	for _, p := range projections.All() {
		if err := a.rm.Reset(ctx, p.Name(), p.(projections.Tabled).Tables()...); err != nil {
			return measure{Err: fmt.Errorf("reset %s: %w", p.Name(), err)}
		}
	}
	start := time.Now()
	tx, err := writeDB(a).BeginTx(ctx, nil)
	if err != nil {
		return measure{Err: err}
	}
	defer tx.Rollback()
	for _, t := range readmodels.ProjectionTables {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+t+` SELECT * FROM `+rawSource(t)); err != nil {
			return measure{Err: fmt.Errorf("insert %s: %w", t, err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return measure{Err: err}
	}
	return measure{Value: float64(events) / time.Since(start).Seconds()}
}

// writeDB is the read models' write pool.
func writeDB(a *evidentApp) *sql.DB {
	if a.lite != nil {
		return a.lite.Write
	}
	return a.rmRead // PostgreSQL: one pool for both
}
