package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"evident/eventstore"
)

// appendSet writes a group in which no stream is named twice with one plain
// INSERT: no function call, no subtransaction, all or nothing. One row per
// event, in argument order, whose version is:
//
//   - for "no stream" (-1), its offset in the request minus one (a stream
//     that exists already holds version 0: the unique index refuses it);
//   - for an exact version v, v plus its offset, where v is in the log in
//     the statement's snapshot, else NULL (the NOT NULL constraint refuses
//     it); a stream past v already holds v+1 (the unique index refuses it);
//   - for "any" (-2), the stream's latest version in the snapshot plus its
//     offset (refused by the unique index if another writer got there first).
//
// So a row is only written where its stream was at the version expected
// (see migrations/00004); when one is refused, nothing is written and
// writeGroup sends the group through evident_append, which fails the
// appends at fault alone.
//
// The one-time filter takes the advisory lock of every stream in $8, in
// key order, before any row is produced: writers of a stream queue there
// rather than on each other's index entries, which, taken in two groups'
// different orders, could deadlock. $8 names the group's streams, or none
// when they are more than maxLockedStreams (see there).
//
// Each array is read through a sub-select, so that the planner cannot see
// its length: the plan it makes for the first calls then costs what the
// generic plan costs, and it keeps the generic plan instead of planning
// every call anew.
const appendSet = `INSERT INTO events AS e (event_id, stream, version, type, data, metadata)
SELECT ev.id, ev.stream,
	CASE WHEN ev.expected = -1 THEN ev.off - 1
		WHEN ev.expected = -2 THEN coalesce((SELECT max(x.version) FROM events AS x WHERE x.stream = ev.stream), -1) + ev.off
		ELSE (SELECT x.version FROM events AS x WHERE x.stream = ev.stream AND x.version = ev.expected) + ev.off END,
	ev.type, ev.data, ev.meta
FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::bigint[]), (SELECT $4::uuid[]),
		(SELECT $5::text[]), (SELECT $6::bytea[]), (SELECT $7::bytea[]))
	WITH ORDINALITY AS ev(stream, expected, off, id, type, data, meta, i)
WHERE (SELECT count(pg_advisory_xact_lock(l.k))
	FROM (SELECT DISTINCT hashtextextended(n, 1) AS k FROM unnest((SELECT $8::text[])) AS n ORDER BY 1) AS l) >= 0
ORDER BY ev.i
RETURNING e.tx::text::bigint, e.seq, e.version`

// maxLockedStreams is the most streams whose advisory locks one append
// statement takes. Unlike row locks, each takes a slot in the server's
// shared lock table, which holds max_locks_per_transaction (64 by default)
// per connection: a bulk append naming thousands of streams would exhaust
// it. Larger groups take none; should one meet another writer of the same
// streams in the opposite order, the server's deadlock detector ends one
// of them after deadlock_timeout, and it is sent again (see runGroup).
// evident_append (migrations/00004) uses the same bound.
const maxLockedStreams = 64

// setArgs is the appendSet argument list for a group: one entry per event,
// and the streams to lock.
type setArgs struct {
	locks            []string
	stream           []string
	expected, offset []int64
	id               pgtype.FlatArray[pgtype.UUID] // not []uuid.UUID, which pgx encodes through its text
	typ              []string
	data, meta       [][]byte
}

// buildSetArgs returns appendSet's arguments for group, or nil when a stream
// is named twice in it (by two appends, or by two requests of one) or a
// request is a check, which has no row to carry it.
func buildSetArgs(group []*call) *setArgs {
	var names []string // one per request
	n := 0
	for _, c := range group {
		for _, r := range c.reqs {
			if len(r.Events) == 0 {
				return nil
			}
			names = append(names, r.Stream)
			n += len(r.Events)
		}
	}
	if !distinct(names) {
		return nil
	}
	a := &setArgs{
		locks:  []string{},
		stream: make([]string, 0, n), expected: make([]int64, 0, n), offset: make([]int64, 0, n),
		id: make(pgtype.FlatArray[pgtype.UUID], 0, n), typ: make([]string, 0, n), data: make([][]byte, 0, n), meta: make([][]byte, 0, n),
	}
	for _, c := range group {
		for _, r := range c.reqs {
			for i, e := range r.Events {
				a.stream = append(a.stream, r.Stream)
				a.expected = append(a.expected, r.Expected)
				a.offset = append(a.offset, int64(i)+1)
				a.id = append(a.id, pgtype.UUID{Bytes: e.ID, Valid: true})
				a.typ = append(a.typ, e.Type)
				a.data = append(a.data, bytesOf(e.Data))
				a.meta = append(a.meta, bytesOf(e.Metadata))
			}
		}
	}
	if len(names) <= maxLockedStreams {
		a.locks = names
	}
	return a
}

// distinct reports whether no name is in names twice.
func distinct(names []string) bool {
	var seen streamSet
	for _, n := range names {
		if seen.has(n) {
			return false
		}
		seen.put(n)
	}
	return true
}

// writeSet runs appendSet for group. Every call succeeds, or the statement
// fails as a whole (see declined).
func (s *Store) writeSet(ctx context.Context, group []*call, a *setArgs) ([]callResult, error) {
	seqs := make([]int64, 0, len(a.id))
	versions := make([]int64, 0, len(a.id))
	var txid int64
	err := s.inTx(ctx, func(q querier) error {
		rows, err := q.Query(ctx, appendSet, a.stream, a.expected, a.offset, a.id, a.typ, a.data, a.meta, a.locks)
		if err != nil {
			return err
		}
		var t, seq, v int64
		_, err = pgx.ForEachRow(rows, []any{&t, &seq, &v}, func() error {
			txid = t
			seqs = append(seqs, seq)
			versions = append(versions, v)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(seqs) != len(a.id) {
		return nil, fmt.Errorf("postgres eventstore: append: %d rows written for %d events", len(seqs), len(a.id))
	}
	// Rows come back in the order they were inserted, which is argument
	// order; seq, taken at each insert, says so.
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			return nil, errors.New("postgres eventstore: append: rows returned out of insert order")
		}
	}
	out := make([]callResult, len(group))
	next := 0 // index of the next event in the group
	for i, c := range group {
		res := eventstore.AppendResult{Versions: make([]int64, len(c.reqs))}
		for j, r := range c.reqs {
			next += len(r.Events)
			res.Versions[j] = versions[next-1]
		}
		res.Position = eventstore.Position{Commit: uint64(txid), Prepare: uint64(seqs[next-1])}
		out[i] = callResult{res: res}
	}
	return out, nil
}

// declined reports whether appendSet failed on the server, for a reason
// evident_append may sort out call by call: a failed check, a reused event
// id, a deadlock. When the server could not be reached, or ctx ended,
// sending the group again would not help.
func declined(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || unavailable(err) {
		return false
	}
	_, ok := errors.AsType[*pgconn.PgError](err)
	return ok
}

// appendEach writes a group of appends of one event each, none expecting
// "any", in which no stream is named twice: the common group. It is
// appendSet with each row checked on its own: a row whose check fails is
// not written (WHERE and ON CONFLICT DO NOTHING) and the others are. As
// each append is one row, each is still all or nothing, and a wrong
// expected version costs no second statement through evident_append. An
// event id already in the log still ends the statement (its index is not
// the arbiter), and writeGroup sends the group through evident_append.
// "Any" is left to appendSet: there a refused row means a newer version
// than the snapshot showed, not a wrong one.
const appendEach = `INSERT INTO events AS e (event_id, stream, version, type, data, metadata)
SELECT ev.id, ev.stream, ev.version, ev.type, ev.data, ev.meta
FROM (SELECT ev.id, ev.stream, ev.type, ev.data, ev.meta, ev.i,
		CASE WHEN ev.expected = -1 THEN 0
			ELSE (SELECT x.version FROM events AS x WHERE x.stream = ev.stream AND x.version = ev.expected) + 1 END AS version
	FROM unnest((SELECT $1::text[]), (SELECT $2::bigint[]), (SELECT $3::uuid[]),
			(SELECT $4::text[]), (SELECT $5::bytea[]), (SELECT $6::bytea[]))
		WITH ORDINALITY AS ev(stream, expected, id, type, data, meta, i)
	WHERE (SELECT count(pg_advisory_xact_lock(l.k))
		FROM (SELECT DISTINCT hashtextextended(n, 1) AS k FROM unnest((SELECT $7::text[])) AS n ORDER BY 1) AS l) >= 0
	) AS ev
WHERE ev.version IS NOT NULL
ORDER BY ev.i
ON CONFLICT (stream, version) DO NOTHING
RETURNING e.tx::text::bigint, e.seq, e.event_id`

// eachOK reports whether appendEach can write group (see there).
func eachOK(group []*call) bool {
	for _, c := range group {
		if len(c.reqs) != 1 || len(c.reqs[0].Events) != 1 || c.reqs[0].Expected == eventstore.Any {
			return false
		}
	}
	return true
}

// writeEach runs appendEach for group, a's arguments. The appends whose
// row was not written fail with ErrWrongVersion, saying where their stream
// is as of one more read; that read also says whether their event id is in
// the log, so that Append need not look again for an earlier write of the
// same append (see callResult.fresh).
func (s *Store) writeEach(ctx context.Context, group []*call, a *setArgs) ([]callResult, error) {
	type written struct{ tx, seq int64 }
	got := make(map[[16]byte]written, len(group))
	err := s.inTx(ctx, func(q querier) error {
		rows, err := q.Query(ctx, appendEach, a.stream, a.expected, a.id, a.typ, a.data, a.meta, a.locks)
		if err != nil {
			return err
		}
		var (
			w  written
			id pgtype.UUID
		)
		_, err = pgx.ForEachRow(rows, []any{&w.tx, &w.seq, &id}, func() error {
			got[id.Bytes] = w
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]callResult, len(group))
	var (
		missed []string
		ids    pgtype.FlatArray[pgtype.UUID]
	)
	for i, c := range group {
		r := c.reqs[0]
		w, ok := got[r.Events[0].ID]
		if !ok {
			missed = append(missed, r.Stream)
			ids = append(ids, pgtype.UUID{Bytes: r.Events[0].ID, Valid: true})
			continue
		}
		out[i] = callResult{res: eventstore.AppendResult{
			Position: eventstore.Position{Commit: uint64(w.tx), Prepare: uint64(w.seq)},
			Versions: []int64{max(r.Expected, -1) + 1},
		}}
	}
	if len(missed) == 0 {
		return out, nil
	}
	at, err := s.missed(ctx, missed, ids)
	if err != nil {
		at = nil // the appends failed all the same; the message says less
	}
	j := 0
	for i, c := range group {
		r := c.reqs[0]
		if _, ok := got[r.Events[0].ID]; ok {
			continue
		}
		var (
			why string
			m   missedAt
		)
		if at != nil {
			m = at[j]
		}
		j++
		switch {
		case r.Expected == eventstore.NoStream:
			why = "expected no stream, the stream exists"
		case at == nil:
			why = fmt.Sprintf("expected version %d, the stream is elsewhere", r.Expected)
		case m.version == nil:
			why = fmt.Sprintf("expected version %d, the stream is at no stream", r.Expected)
		default:
			why = fmt.Sprintf("expected version %d, the stream is at %d", r.Expected, *m.version)
		}
		out[i] = callResult{
			err:   fmt.Errorf("postgres eventstore: append to %q: %s: %w", r.Stream, why, eventstore.ErrWrongVersion),
			fresh: at != nil && !m.idTaken,
		}
	}
	return out, nil
}

// missedAt is where an append's stream is once its row was not written, and
// whether its event id is in the log.
type missedAt struct {
	version *int64 // nil: no stream
	idTaken bool
}

// missed reads, for each of streams and its append's event id in ids, the
// stream's latest version and whether the id is in the log: one row each,
// in order.
func (s *Store) missed(ctx context.Context, streams []string, ids pgtype.FlatArray[pgtype.UUID]) ([]missedAt, error) {
	rows, err := s.pool.Query(ctx, `SELECT (SELECT max(e.version) FROM events AS e WHERE e.stream = m.stream),
	EXISTS (SELECT FROM events AS e WHERE e.event_id = m.id)
FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS m(stream, id, i) ORDER BY m.i`, streams, ids)
	if err != nil {
		return nil, err
	}
	out := make([]missedAt, 0, len(streams))
	var m missedAt
	_, err = pgx.ForEachRow(rows, []any{&m.version, &m.idTaken}, func() error {
		out = append(out, m)
		m = missedAt{}
		return nil
	})
	if err == nil && len(out) != len(streams) {
		err = fmt.Errorf("postgres eventstore: %d rows for %d streams", len(out), len(streams))
	}
	return out, err
}
