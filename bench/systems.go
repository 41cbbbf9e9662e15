package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/hallgren/eventsourcing/core"
	hsql "github.com/hallgren/eventsourcing/eventstore/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/modernice/goes/backend/postgres"
	"github.com/modernice/goes/codec"
	"github.com/modernice/goes/event"
	"github.com/modernice/goes/event/query"

	"evident/eventstore"
	evpg "evident/eventstore/postgres"
	evsqlite "evident/eventstore/sqlite"
	"evident/internal/sqlitedb"
)

// errConflict is an append refused because the stream moved (an expected
// version that no longer holds, or the unique index that stands for it).
var errConflict = errors.New("version conflict")

// appender is one system under test, behind the operations the append
// scenarios need. Versions follow Evident: the first event of a stream is
// version 0 and -1 means "no stream"; adapters translate.
type appender interface {
	// Append writes one event to stream at the expected version (-1: the
	// stream must not exist).
	Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error
	// AppendBatch writes ps to a new stream in one transaction.
	AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error
	// Version reads the stream's current version through the system's
	// normal read path (-1 when it has no events).
	Version(ctx context.Context, stream uuid.UUID) (int64, error)
	// Versions lists every stored version of the stream, for the duplicate check.
	Versions(ctx context.Context, stream uuid.UUID) ([]int64, error)
	// Seed creates each stream with one event (version 0), as fast as the system allows.
	Seed(ctx context.Context, streams []uuid.UUID) error
	Close()
}

// where is what a system needs to open a fresh database.
type where struct {
	pg  *pgServer
	tmp string
}

type system struct {
	name string
	open func(ctx context.Context, w where, conns int) (appender, error)
}

// ---------------------------------------------------------------- Evident

type evidentAppender struct {
	store eventstore.Store
	close func()
}

func openEvidentPG(ctx context.Context, w where, conns int) (appender, error) {
	sc, pool, err := w.pg.freshPool(ctx, conns)
	if err != nil {
		return nil, err
	}
	st, err := evpg.New(ctx, pool)
	if err != nil {
		pool.Close()
		sc.Drop()
		return nil, err
	}
	return &evidentAppender{store: st, close: func() { st.Close(); pool.Close(); sc.Drop() }}, nil
}

func openEvidentSQLite(_ context.Context, w where, _ int) (appender, error) {
	dir, err := os.MkdirTemp(w.tmp, "evident-*")
	if err != nil {
		return nil, err
	}
	db, err := sqlitedb.Open(filepath.Join(dir, "evident.db"))
	if err != nil {
		return nil, err
	}
	st, err := evsqlite.New(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &evidentAppender{store: st, close: func() { st.Close(); db.Close(); os.RemoveAll(dir) }}, nil
}

func evData(p payload) eventstore.EventData {
	return eventstore.EventData{ID: p.ID, Type: p.Type, Data: p.Data, Metadata: p.Meta}
}

func (e *evidentAppender) Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error {
	_, err := e.store.Append(ctx, eventstore.AppendRequest{Stream: streamName(stream), Expected: expected, Events: []eventstore.EventData{evData(p)}})
	if errors.Is(err, eventstore.ErrWrongVersion) {
		return errConflict
	}
	return err
}

func (e *evidentAppender) AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error {
	evs := make([]eventstore.EventData, len(ps))
	for i, p := range ps {
		evs[i] = evData(p)
	}
	_, err := e.store.Append(ctx, eventstore.AppendRequest{Stream: streamName(stream), Expected: eventstore.NoStream, Events: evs})
	return err
}

func (e *evidentAppender) Version(ctx context.Context, stream uuid.UUID) (int64, error) {
	evs, err := e.store.ReadStream(ctx, streamName(stream), 0)
	if err != nil || len(evs) == 0 {
		return -1, err
	}
	return evs[len(evs)-1].Version, nil
}

func (e *evidentAppender) Versions(ctx context.Context, stream uuid.UUID) ([]int64, error) {
	evs, err := e.store.ReadStream(ctx, streamName(stream), 0)
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Version
	}
	return out, err
}

func (e *evidentAppender) Seed(ctx context.Context, streams []uuid.UUID) error {
	const per = 1000
	for len(streams) > 0 {
		n := min(per, len(streams))
		reqs := make([]eventstore.AppendRequest, n)
		for i, id := range streams[:n] {
			reqs[i] = eventstore.AppendRequest{Stream: streamName(id), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{evData(newPayload(id))}}
		}
		if _, err := e.store.Append(ctx, reqs...); err != nil {
			return err
		}
		streams = streams[n:]
	}
	return nil
}

func (e *evidentAppender) Close() { e.close() }

// ---------------------------------------------------------------- raw PostgreSQL

// rawPG is the database limit: the smallest event-log table (a position,
// the stream and version with their unique index, the same columns of
// data), written with plain pgx statements. optimistic reads the stream's
// version first in the same transaction (the honest optimistic append);
// otherwise an append is one autocommitted INSERT.
type rawPG struct {
	pool       *pgxpool.Pool
	optimistic bool
	// notify (diagnostic) sends pg_notify in the INSERT's transaction, as
	// Evident's append does.
	notify bool
	close  func()
}

const rawPGTable = `CREATE TABLE raw_events (
	seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	event_id uuid   NOT NULL,
	stream   text   NOT NULL,
	version  bigint NOT NULL,
	type     text   NOT NULL,
	data     bytea  NOT NULL,
	metadata bytea  NOT NULL,
	UNIQUE (stream, version))`

func openRawPGNotify(ctx context.Context, w where, conns int) (appender, error) {
	a, err := openRawPG(false)(ctx, w, conns)
	if err == nil {
		a.(*rawPG).notify = true
	}
	return a, err
}

func openRawPG(optimistic bool) func(ctx context.Context, w where, conns int) (appender, error) {
	return func(ctx context.Context, w where, conns int) (appender, error) {
		sc, pool, err := w.pg.freshPool(ctx, conns)
		if err != nil {
			return nil, err
		}
		if _, err := pool.Exec(ctx, rawPGTable); err != nil {
			pool.Close()
			sc.Drop()
			return nil, err
		}
		return &rawPG{pool: pool, optimistic: optimistic, close: func() { pool.Close(); sc.Drop() }}, nil
	}
}

const rawInsert = `INSERT INTO raw_events (event_id, stream, version, type, data, metadata) VALUES ($1, $2, $3, $4, $5, $6)`

func (r *rawPG) Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error {
	name := streamName(stream)
	if r.notify {
		tx, err := r.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		b := &pgx.Batch{}
		b.Queue(rawInsert, p.ID, name, expected+1, p.Type, p.Data, p.Meta)
		b.Queue(`SELECT pg_notify('raw_events', '')`)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	if !r.optimistic {
		_, err := r.pool.Exec(ctx, rawInsert, p.ID, name, expected+1, p.Type, p.Data, p.Meta)
		if isUniqueViolation(err) {
			return errConflict
		}
		return err
	}
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var v int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), -1) FROM raw_events WHERE stream = $1`, name).Scan(&v); err != nil {
		return err
	}
	if v != expected {
		return errConflict
	}
	if _, err := tx.Exec(ctx, rawInsert, p.ID, name, expected+1, p.Type, p.Data, p.Meta); err != nil {
		if isUniqueViolation(err) {
			return errConflict
		}
		return err
	}
	return tx.Commit(ctx)
}

func (r *rawPG) AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error {
	tx, err := r.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	b := &pgx.Batch{}
	name := streamName(stream)
	for i, p := range ps {
		b.Queue(rawInsert, p.ID, name, int64(i), p.Type, p.Data, p.Meta)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func (r *rawPG) Version(ctx context.Context, stream uuid.UUID) (int64, error) {
	var v int64
	err := r.pool.QueryRow(ctx, `SELECT coalesce(max(version), -1) FROM raw_events WHERE stream = $1`, streamName(stream)).Scan(&v)
	return v, err
}

func (r *rawPG) Versions(ctx context.Context, stream uuid.UUID) ([]int64, error) {
	rows, err := r.pool.Query(ctx, `SELECT version FROM raw_events WHERE stream = $1 ORDER BY version`, streamName(stream))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

func (r *rawPG) Seed(ctx context.Context, streams []uuid.UUID) error {
	rows := make([][]any, len(streams))
	for i, id := range streams {
		p := newPayload(id)
		rows[i] = []any{p.ID, streamName(id), int64(0), p.Type, p.Data, p.Meta}
	}
	_, err := r.pool.CopyFrom(ctx, pgx.Identifier{"raw_events"},
		[]string{"event_id", "stream", "version", "type", "data", "metadata"}, pgx.CopyFromRows(rows))
	return err
}

func (r *rawPG) Close() { r.close() }

// ---------------------------------------------------------------- raw SQLite

// rawSQLite is the same table and statements on the driver Evident uses,
// with its pragmas and its one write connection (transactions begin
// IMMEDIATE), which is the fastest way to write one SQLite file.
type rawSQLite struct {
	db         *sql.DB
	optimistic bool
	close      func()
}

const rawSQLiteTable = `CREATE TABLE raw_events (
	seq      INTEGER PRIMARY KEY,
	event_id TEXT    NOT NULL,
	stream   TEXT    NOT NULL,
	version  INTEGER NOT NULL,
	type     TEXT    NOT NULL,
	data     TEXT    NOT NULL,
	metadata TEXT    NOT NULL,
	UNIQUE (stream, version))`

func openRawSQLite(optimistic bool) func(ctx context.Context, w where, conns int) (appender, error) {
	return func(ctx context.Context, w where, _ int) (appender, error) {
		dir, err := os.MkdirTemp(w.tmp, "raw-*")
		if err != nil {
			return nil, err
		}
		db, err := openSQLite(filepath.Join(dir, "raw.db"), 1, true)
		if err != nil {
			return nil, err
		}
		if _, err := db.ExecContext(ctx, rawSQLiteTable); err != nil {
			db.Close()
			return nil, err
		}
		return &rawSQLite{db: db, optimistic: optimistic, close: func() { db.Close(); os.RemoveAll(dir) }}, nil
	}
}

func (r *rawSQLite) Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error {
	name := streamName(stream)
	if !r.optimistic {
		_, err := r.db.ExecContext(ctx, rawInsert, p.ID.String(), name, expected+1, p.Type, string(p.Data), string(p.Meta))
		if isSQLiteUnique(err) {
			return errConflict
		}
		return err
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), -1) FROM raw_events WHERE stream = $1`, name).Scan(&v); err != nil {
		return err
	}
	if v != expected {
		return errConflict
	}
	if _, err := tx.ExecContext(ctx, rawInsert, p.ID.String(), name, expected+1, p.Type, string(p.Data), string(p.Meta)); err != nil {
		return err
	}
	return tx.Commit()
}

func (r *rawSQLite) AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error {
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.PrepareContext(ctx, rawInsert)
	if err != nil {
		return err
	}
	defer ins.Close()
	name := streamName(stream)
	for i, p := range ps {
		if _, err := ins.ExecContext(ctx, p.ID.String(), name, int64(i), p.Type, string(p.Data), string(p.Meta)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (r *rawSQLite) Version(ctx context.Context, stream uuid.UUID) (int64, error) {
	var v int64
	err := r.db.QueryRowContext(ctx, `SELECT coalesce(max(version), -1) FROM raw_events WHERE stream = $1`, streamName(stream)).Scan(&v)
	return v, err
}

func (r *rawSQLite) Versions(ctx context.Context, stream uuid.UUID) ([]int64, error) {
	return sqlVersions(ctx, r.db, `SELECT version FROM raw_events WHERE stream = $1 ORDER BY version`, streamName(stream))
}

func sqlVersions(ctx context.Context, db *sql.DB, q string, args ...any) ([]int64, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (r *rawSQLite) Seed(ctx context.Context, streams []uuid.UUID) error {
	for len(streams) > 0 {
		n := min(1000, len(streams))
		tx, err := r.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		for _, id := range streams[:n] {
			p := newPayload(id)
			if _, err := tx.ExecContext(ctx, rawInsert, p.ID.String(), streamName(id), 0, p.Type, string(p.Data), string(p.Meta)); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		streams = streams[n:]
	}
	return nil
}

func (r *rawSQLite) Close() { r.close() }

// ---------------------------------------------------------------- goes

// rawJSON is event data goes stores as it is (its data column is jsonb).
type rawJSON []byte

func (r rawJSON) Marshal() ([]byte, error) { return r, nil }
func (r *rawJSON) Unmarshal(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

// goesAppender drives github.com/modernice/goes' PostgreSQL event store
// through event.Store.Insert, the call its aggregate repository makes. Its
// optimistic concurrency is the unique index on (aggregate_id,
// aggregate_name, aggregate_version); versions start at 1.
type goesAppender struct {
	store *postgres.EventStore
	close func()
}

func openGoes(ctx context.Context, w where, conns int) (appender, error) {
	sc, pool, err := w.pg.freshPool(ctx, conns)
	if err != nil {
		return nil, err
	}
	reg := codec.New()
	codec.Register[rawJSON](reg, "user.created")
	st := postgres.NewEventStore(reg, postgres.Pool(pool))
	if err := st.Connect(ctx); err != nil {
		pool.Close()
		sc.Drop()
		return nil, fmt.Errorf("goes connect: %w", err)
	}
	return &goesAppender{store: st, close: func() { pool.Close(); sc.Drop() }}, nil
}

func goesEvent(stream uuid.UUID, version int64, p payload) event.Event {
	return event.New[any](p.Type, rawJSON(p.combined()), event.ID(p.ID), event.Time(time.Now()),
		event.Aggregate(stream, "user", int(version+1)))
}

func (g *goesAppender) Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error {
	err := g.store.Insert(ctx, goesEvent(stream, expected+1, p))
	if isUniqueViolation(err) {
		return errConflict
	}
	return err
}

func (g *goesAppender) AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error {
	evs := make([]event.Event, len(ps))
	for i, p := range ps {
		evs[i] = goesEvent(stream, int64(i), p)
	}
	return g.store.Insert(ctx, evs...)
}

func (g *goesAppender) Versions(ctx context.Context, stream uuid.UUID) ([]int64, error) {
	evs, errs, err := g.store.Query(ctx, query.New(query.Aggregate("user", stream), query.SortByAggregate()))
	if err != nil {
		return nil, err
	}
	var out []int64
	for evs != nil || errs != nil {
		select {
		case e, ok := <-evs:
			if !ok {
				evs = nil
				continue
			}
			_, _, v := e.Aggregate()
			out = append(out, int64(v-1))
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			return nil, err
		}
	}
	return out, nil
}

func (g *goesAppender) Version(ctx context.Context, stream uuid.UUID) (int64, error) {
	vs, err := g.Versions(ctx, stream)
	if err != nil || len(vs) == 0 {
		return -1, err
	}
	return vs[len(vs)-1], nil
}

func (g *goesAppender) Seed(ctx context.Context, streams []uuid.UUID) error {
	for len(streams) > 0 {
		n := min(1000, len(streams))
		evs := make([]event.Event, n)
		for i, id := range streams[:n] {
			evs[i] = goesEvent(id, 0, newPayload(id))
		}
		if err := g.store.Insert(ctx, evs...); err != nil {
			return err
		}
		streams = streams[n:]
	}
	return nil
}

func (g *goesAppender) Close() { g.close() }

// ---------------------------------------------------------------- hallgren

// hallgrenAppender drives github.com/hallgren/eventsourcing's SQL event
// store through core.EventStore.Save, the call its repository makes: it
// reads the aggregate's last version, compares, and inserts, in one
// transaction. Versions start at 1.
type hallgrenAppender struct {
	store  core.EventStore
	db     *sql.DB
	sqlite bool
	close  func()
}

func openHallgrenPG(ctx context.Context, w where, conns int) (appender, error) {
	sc, err := w.pg.freshSchema(ctx)
	if err != nil {
		return nil, err
	}
	db, err := sc.sqlDB(conns)
	if err != nil {
		sc.Drop()
		return nil, err
	}
	st, err := hsql.NewPostgres(db)
	if err != nil {
		db.Close()
		sc.Drop()
		return nil, err
	}
	return &hallgrenAppender{store: st, db: db, close: func() { db.Close(); sc.Drop() }}, nil
}

// openHallgrenSQLite uses the store's single-writer mode, which its
// documentation prescribes for concurrent writers, on a file opened with
// Evident's pragmas and driver.
func openHallgrenSQLite(_ context.Context, w where, _ int) (appender, error) {
	dir, err := os.MkdirTemp(w.tmp, "hallgren-*")
	if err != nil {
		return nil, err
	}
	db, err := openSQLite(filepath.Join(dir, "hallgren.db"), 0, false)
	if err != nil {
		return nil, err
	}
	st, err := hsql.NewSQLiteSingelWriter(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &hallgrenAppender{store: st, db: db, sqlite: true, close: func() { db.Close(); os.RemoveAll(dir) }}, nil
}

func hallgrenEvent(stream uuid.UUID, version int64, p payload) core.Event {
	return core.Event{AggregateID: stream.String(), Version: core.Version(version + 1), AggregateType: "user",
		Timestamp: time.Now(), Reason: p.Type, Data: p.Data, Metadata: p.Meta}
}

func (h *hallgrenAppender) Append(ctx context.Context, stream uuid.UUID, expected int64, p payload) error {
	err := h.store.Save([]core.Event{hallgrenEvent(stream, expected+1, p)})
	if errors.Is(err, core.ErrConcurrency) || isUniqueViolation(err) || isSQLiteUnique(err) {
		return errConflict
	}
	return err
}

func (h *hallgrenAppender) AppendBatch(ctx context.Context, stream uuid.UUID, ps []payload) error {
	evs := make([]core.Event, len(ps))
	for i, p := range ps {
		evs[i] = hallgrenEvent(stream, int64(i), p)
	}
	return h.store.Save(evs)
}

func (h *hallgrenAppender) Versions(ctx context.Context, stream uuid.UUID) ([]int64, error) {
	it, err := h.store.Get(ctx, stream.String(), "user", 0)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []int64
	for it.Next() {
		e, err := it.Value()
		if err != nil {
			return nil, err
		}
		out = append(out, int64(e.Version)-1)
	}
	return out, nil
}

func (h *hallgrenAppender) Version(ctx context.Context, stream uuid.UUID) (int64, error) {
	vs, err := h.Versions(ctx, stream)
	if err != nil || len(vs) == 0 {
		return -1, err
	}
	return vs[len(vs)-1], nil
}

// Seed writes the store's own table with plain INSERTs in one
// transaction: Save takes one aggregate at a time, and seeding is not what
// is measured.
func (h *hallgrenAppender) Seed(ctx context.Context, streams []uuid.UUID) error {
	tx, err := h.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	ins, err := tx.PrepareContext(ctx, `INSERT INTO events (id, version, reason, type, timestamp, data, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	ts := time.Now().Format(time.RFC3339)
	for _, id := range streams {
		p := newPayload(id)
		if _, err := ins.ExecContext(ctx, id.String(), 1, p.Type, "user", ts, p.Data, p.Meta); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (h *hallgrenAppender) Close() { h.close() }
