package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrBatched wraps the failure of a write that a batched Tx sent after its
// method had returned nil (Store.UpdateAsync on PostgreSQL): which write failed is not
// known. Run the work again with Update to find out.
var ErrBatched = errors.New("readmodels: a batched write failed")

// checkpointsMovedCode is the SQLSTATE evident_advance_checkpoints fails with
// when a checkpoint was not where its writer left it (migration 00003).
const checkpointsMovedCode = "EV001"

// batch is what a batched Tx has not sent yet, on the connection it holds.
type batch struct {
	conn   *sql.Conn
	queued []queued
	begun  bool // BEGIN has been sent
}

type queued struct {
	sql  string
	args []any
}

// updateBatched is UpdateAsync on PostgreSQL. It sends nothing while fn
// writes: the writes are queued and sent with BEGIN, and at the end with
// COMMIT, as one batch, so that a transaction that only writes costs one
// round trip. A read (Tx.User, Tx.Session, Tx.Checkpoint) first sends what
// is queued, in the transaction, and then reads: it sees every write made
// before it. A checkpoint move (Tx.AdvanceCheckpoint(s)) that finds a
// checkpoint moved fails the batch, and so the commit.
//
// So a write's method returns nil and its failure comes from UpdateAsync:
// wrapped in ErrBatched (with ErrUnavailable when the database, not the
// statement, failed), or, for checkpoints that moved, as the
// *CheckpointsMovedError AdvanceCheckpoints would have returned. Nothing
// is committed then.
func (s *Store) updateBatched(ctx context.Context, fn func(*Tx) error) error {
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return &TxError{Op: "begin", Err: err}
	}
	b := &batch{conn: conn}
	tx := &Tx{ctx: ctx, now: s.now, dialect: s.dialect, batch: b, async: true}
	err = fn(tx)
	if err == nil {
		err = tx.send(true)
	}
	if err != nil {
		if b.begun && !b.end(ctx) {
			discard(conn) // a transaction may still be open on it
			return err
		}
		_ = conn.Close()
		return err
	}
	_ = conn.Close()
	if tx.checkpointed {
		s.broadcast()
		s.notifyOthers()
	}
	return nil
}

// end rolls back what the batch began, and reports whether the connection
// is back outside any transaction.
func (b *batch) end(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := b.conn.ExecContext(ctx, "ROLLBACK")
	return err == nil
}

// exec runs a write: now on a Tx of Update, queued on a batched one.
func (tx *Tx) exec(q string, args ...any) error {
	if tx.batch != nil {
		tx.batch.queued = append(tx.batch.queued, queued{sql: q, args: args})
		return nil
	}
	_, err := tx.q.ExecContext(tx.ctx, q, args...)
	return err
}

// execResult runs a write whose result the caller needs, at once: on a
// batched Tx after the writes queued before it.
func (tx *Tx) execResult(q string, args ...any) (sql.Result, error) {
	if tx.batch == nil {
		return tx.q.ExecContext(tx.ctx, q, args...)
	}
	if err := tx.send(false); err != nil {
		return nil, err
	}
	return tx.batch.conn.ExecContext(tx.ctx, q, args...)
}

// reader is where a read goes: the transaction, once a batched Tx has sent
// the writes queued before it.
func (tx *Tx) reader() (querier, error) {
	if tx.batch == nil {
		return tx.q, nil
	}
	if err := tx.send(false); err != nil {
		return nil, err
	}
	return tx.batch.conn, nil
}

// send sends a batched Tx's queued writes, after BEGIN if that is not sent
// yet and followed by COMMIT when commit is set, as one batch.
func (tx *Tx) send(commit bool) error {
	b := tx.batch
	if len(b.queued) == 0 && !commit && b.begun {
		return nil
	}
	pb := &pgx.Batch{}
	if !b.begun {
		pb.Queue("BEGIN")
	}
	for _, q := range b.queued {
		pb.Queue(q.sql, q.args...)
	}
	if commit {
		pb.Queue("COMMIT")
	}
	b.queued, b.begun = b.queued[:0], true
	err := b.conn.Raw(func(dc any) error {
		c, err := pgxConn(dc)
		if err != nil {
			return err
		}
		br := c.SendBatch(tx.ctx, pb)
		for range pb.Len() {
			if _, err := br.Exec(); err != nil {
				_ = br.Close() // the first error is the one to report
				return err
			}
		}
		return br.Close()
	})
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == checkpointsMovedCode {
		return &CheckpointsMovedError{Names: strings.Split(pe.Detail, "\n")}
	}
	return fmt.Errorf("%w: %w", ErrBatched, classify(err))
}

// advanceBatched queues the moves of a batched Tx as one call of
// evident_advance_checkpoints, which fails the batch when any checkpoint
// moved.
func (tx *Tx) advanceBatched(moves []CheckpointMove) error {
	if len(moves) == 0 {
		return nil
	}
	names, froms, tos := make([]string, len(moves)), make([]string, len(moves)), make([]string, len(moves))
	for i, m := range moves {
		names[i], froms[i], tos[i] = m.Name, m.From.String(), m.To.String()
	}
	if tx.async {
		if err := tx.exec(`SELECT set_config('synchronous_commit', 'off', true)`); err != nil {
			return err
		}
	}
	if err := tx.exec(`SELECT evident_advance_checkpoints($1, $2, $3, $4)`, names, froms, tos, micros(tx.now())); err != nil {
		return err
	}
	return tx.notify(moves[0].Name, moves[0].To)
}
