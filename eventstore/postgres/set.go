package postgres

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"evident/eventstore"
)

// appendSet writes a group in which no stream is named twice with one call
// of evident_append_set (migrations/00003): set-based, no subtransaction,
// all or nothing. When one of its checks fails (a wrong expected version) or
// an event id is already in the log, nothing is written and writeGroup sends
// the group through evident_append, which fails the appends at fault alone.
const appendSet = `SELECT tx_id, seqs, names, starts FROM evident_append_set(
	$1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::uuid[], $7::text[], $8::bytea[], $9::bytea[])`

// setArgs is the appendSet argument list for a group.
type setArgs struct {
	gStream           []string
	gExpected, gCount []int64
	eStream           []string
	eOffset           []int64
	eID               []uuid.UUID
	eType             []string
	eData, eMeta      [][]byte
}

// buildSetArgs returns appendSet's arguments for group, or nil when a stream
// is named twice in it (by two appends, or by two requests of one).
func buildSetArgs(group []*call) *setArgs {
	a := &setArgs{}
	seen := make(map[string]bool)
	for _, c := range group {
		for _, r := range c.reqs {
			if seen[r.Stream] {
				return nil
			}
			seen[r.Stream] = true
			a.gStream = append(a.gStream, r.Stream)
			a.gExpected = append(a.gExpected, r.Expected)
			a.gCount = append(a.gCount, int64(len(r.Events)))
			for i, e := range r.Events {
				a.eStream = append(a.eStream, r.Stream)
				a.eOffset = append(a.eOffset, int64(i)+1)
				a.eID = append(a.eID, e.ID)
				a.eType = append(a.eType, e.Type)
				a.eData = append(a.eData, bytesOf(e.Data))
				a.eMeta = append(a.eMeta, bytesOf(e.Metadata))
			}
		}
	}
	return a
}

// writeSet runs appendSet for group. Every call succeeds, or the statement
// fails as a whole (see declined).
func (s *Store) writeSet(ctx context.Context, group []*call, a *setArgs) ([]callResult, error) {
	var (
		txid    *int64
		seqs    []int64
		streams []string
		starts  []int64
	)
	err := s.inTx(ctx, func(q querier) error {
		return q.QueryRow(ctx, appendSet, a.gStream, a.gExpected, a.gCount,
			a.eStream, a.eOffset, a.eID, a.eType, a.eData, a.eMeta).Scan(&txid, &seqs, &streams, &starts)
	})
	if err != nil {
		return nil, err
	}
	if txid == nil || len(seqs) != len(a.eID) || len(streams) != len(starts) {
		return nil, errors.New("postgres eventstore: append: malformed result")
	}
	start := make(map[string]int64, len(streams))
	for i, st := range streams {
		start[st] = starts[i]
	}
	out := make([]callResult, len(group))
	next := 0 // index of the call's first event in the group
	for i, c := range group {
		res := eventstore.AppendResult{Versions: make([]int64, len(c.reqs))}
		for j, r := range c.reqs {
			res.Versions[j] = start[r.Stream] + int64(len(r.Events))
			next += len(r.Events)
		}
		res.Position = eventstore.Position{Commit: uint64(*txid), Prepare: uint64(seqs[next-1])}
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
