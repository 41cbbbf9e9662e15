package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"evident/projections"
	"evident/readmodels"
)

// rebuiltRows are the rows a rebuild leaves in the four read-model tables,
// read back once (untimed) for the raw write.
type rebuiltRows struct {
	cols map[string][]string
	rows map[string][][]any
	n    int // rows in all
}

// readRebuilt reads every row of the projection tables as the database
// driver returns them.
func readRebuilt(ctx context.Context, a *evidentApp) (*rebuiltRows, error) {
	rr := &rebuiltRows{cols: map[string][]string{}, rows: map[string][][]any{}}
	for _, t := range readmodels.ProjectionTables {
		rows, err := a.rmRead.QueryContext(ctx, `SELECT * FROM `+t)
		if err != nil {
			return nil, err
		}
		cols, err := rows.Columns()
		if err != nil {
			rows.Close()
			return nil, err
		}
		rr.cols[t] = cols
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			rr.rows[t] = append(rr.rows[t], vals)
			rr.n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return rr, nil
}

// rawWrite writes the rows of rr into the emptied read-model tables (their
// indexes in place) and returns events per second of the log they came
// from: the ceiling of a rebuild's writes alone, with no log read, no
// decoding, no row read back and no upsert. PostgreSQL: one transaction,
// one COPY per table. SQLite: one transaction, one prepared INSERT per row.
func rawWrite(ctx context.Context, a *evidentApp, rr *rebuiltRows, events int) measure {
	for _, p := range projections.All() {
		if err := a.rm.Reset(ctx, p.Name(), p.(projections.Tabled).Tables()...); err != nil {
			return measure{Err: fmt.Errorf("reset %s: %w", p.Name(), err)}
		}
	}
	start := time.Now()
	var err error
	if a.pool != nil {
		err = pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
			for _, t := range readmodels.ProjectionTables {
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{t}, rr.cols[t], pgx.CopyFromRows(rr.rows[t])); err != nil {
					return fmt.Errorf("copy %s: %w", t, err)
				}
			}
			return nil
		})
	} else {
		err = rawWriteSQLite(ctx, a, rr)
	}
	if err != nil {
		return measure{Err: err}
	}
	return measure{Value: float64(events) / time.Since(start).Seconds()}
}

func rawWriteSQLite(ctx context.Context, a *evidentApp, rr *rebuiltRows) error {
	tx, err := a.lite.Write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, t := range readmodels.ProjectionTables {
		cols := rr.cols[t]
		q := `INSERT INTO ` + t + ` (` + strings.Join(cols, ", ") + `) VALUES (?` + strings.Repeat(", ?", len(cols)-1) + `)`
		st, err := tx.PrepareContext(ctx, q)
		if err != nil {
			return err
		}
		for _, r := range rr.rows[t] {
			if _, err := st.ExecContext(ctx, r...); err != nil {
				st.Close()
				return fmt.Errorf("insert %s: %w", t, err)
			}
		}
		st.Close()
	}
	return tx.Commit()
}
