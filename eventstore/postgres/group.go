package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"evident/eventstore"
)

// Group commit.
//
// Every Append goes through a queue. A committer takes everything queued (up
// to maxGroupCalls appends or maxGroupBytes of payload) and writes it with one
// statement: one round trip, one transaction and one WAL flush for the whole
// group.
//
// The statement is appendSet (set.go) when the group names no stream twice
// (the usual case): one plain INSERT of every event, set-based, with no
// subtransaction. (When every append is of one event and expects no stream
// or an exact version, appendEach, which writes the rows whose check
// passes and answers the others ErrWrongVersion itself.) If any check fails (a wrong expected version) or any row
// is refused (an event id already in the log), the statement ends with
// nothing written and the group is sent again as one call of the
// evident_append function (migrations/00004), which runs each append in its
// own subtransaction, so that a wrong expected version or a reused event id
// fails that append alone. A group that names a stream twice goes to
// evident_append directly (there, a later append sees the version an
// earlier one leaves).
//
// Up to maxCommitters groups are in flight at once, each on its own pooled
// connection, so that one group's flush overlaps the next group's work (the
// server shares WAL flushes between them too). Two are enough for that
// overlap; more only make groups smaller. Every statement costs the server
// and the client a round trip, a transaction and a commit whatever it
// carries, which on a machine whose cores the server shares is what bounds
// throughput: with four in flight, eight writers got groups of barely more
// than one append each, and paid about that per append.
//
// There is no timer and no committer goroutine waiting for work: a caller
// that finds fewer than maxCommitters groups in flight leads, that is, takes
// the next group (its own call with whatever was queued before and with it)
// and runs it itself, on its own goroutine; the others' calls are answered
// over their channels. A lone writer thus gets a group of one, at the
// latency of a plain one-statement transaction, with no hand-off to another
// goroutine and back. Calls queued behind a leader's group are taken by a
// committer goroutine it starts in its place once its own call is answered
// (see lead).
//
// If a group's evident_append fails as a whole (a deadlock with another
// writer, a lost connection), each of its appends is retried alone, so no
// append can fail because of another one.
const (
	maxCommitters = 2
	maxGroupCalls = 32 // each call is a subtransaction; PostgreSQL caches 64 per transaction
	maxGroupBytes = 4 << 20
	// notifyEvery is the shortest time between two NOTIFYs (see notifier).
	notifyEvery = 2 * time.Millisecond
)

// call is one Append waiting for its group.
type call struct {
	ctx   context.Context
	reqs  []eventstore.AppendRequest
	size  int
	reply chan callResult // capacity 1: the committer never blocks on it
	// waited: the call was left for a later group once, because a stream
	// it names was in the group taken; it is not left again (see next).
	waited bool
}

type callResult struct {
	res eventstore.AppendResult
	err error // errIDTaken when an event id is in the log: Append decides retry or misuse
	// fresh: err is ErrWrongVersion and the append's first event id was
	// not in the log when it was found to fail, so it is no retry of an
	// append already written and Append need not look for one.
	fresh bool
}

func payload(reqs []eventstore.AppendRequest) int {
	n := 0
	for _, r := range reqs {
		for _, e := range r.Events {
			n += len(e.Data) + len(e.Metadata) + len(e.Type) + 64
		}
	}
	return n
}

// submit queues reqs and, if fewer than maxCommitters groups are in flight,
// leads (see lead); else it waits for a committer to answer. When ctx ends
// while the call is still queued, it is withdrawn and nothing is written;
// once its group has been sent the outcome is unknown, and the error says so.
func (s *Store) submit(ctx context.Context, reqs []eventstore.AppendRequest) callResult {
	c := &call{ctx: ctx, reqs: reqs, size: payload(reqs), reply: make(chan callResult, 1)}
	s.qmu.Lock()
	if s.appendClosed {
		s.qmu.Unlock()
		return callResult{err: fmt.Errorf("postgres eventstore: append: the store is closed: %w", eventstore.ErrUnavailable)}
	}
	s.queue = append(s.queue, c)
	if !s.notifying {
		s.notifying = true
		go s.notifier()
	}
	leads := s.committers < maxCommitters
	if leads {
		s.committers++
		s.commitWG.Add(1)
	}
	s.qmu.Unlock()
	if leads {
		s.lead(c)
		if len(c.reply) > 0 {
			r := <-c.reply
			if r.err != nil && ctx.Err() != nil && errors.Is(r.err, ctx.Err()) {
				// Its group was c alone, cancelled with ctx.
				r.err = fmt.Errorf("postgres eventstore: append sent, outcome unknown (retrying the same append is safe): %w", r.err)
			}
			return r
		}
		// Another committer took c's group: wait for it as below.
	}

	select {
	case r := <-c.reply:
		return r
	case <-ctx.Done():
	}
	s.qmu.Lock()
	if i := slices.Index(s.queue, c); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
		s.qmu.Unlock()
		return callResult{err: fmt.Errorf("postgres eventstore: append withdrawn before it was sent, nothing written: %w", ctx.Err())}
	}
	s.qmu.Unlock()
	return callResult{err: fmt.Errorf("postgres eventstore: append sent, outcome unknown (retrying the same append is safe): %w", ctx.Err())}
}

// lead runs groups, as a committer, until c is answered: c's own group
// first, unless more than a group's worth was queued before it. A group of
// c alone runs under c's ctx, so that a caller that gives up is not held
// up by its statement (whose outcome is then unknown); a group that
// carries other calls runs to its end whatever c's ctx does, as in a
// committer. If calls are queued once c is answered, a committer goroutine
// takes them in c's place.
func (s *Store) lead(c *call) {
	for len(c.reply) == 0 {
		group := s.next()
		if group == nil {
			return // another committer took c's group
		}
		ctx := s.groupCtx
		if len(group) == 1 && group[0] == c {
			ctx = c.ctx
		}
		s.runGroup(ctx, group)
	}
	s.qmu.Lock()
	if len(s.queue) == 0 {
		s.committers--
		s.qmu.Unlock()
		s.commitWG.Done()
		return
	}
	s.qmu.Unlock()
	go s.commit()
}

// commit runs groups until the queue is empty.
func (s *Store) commit() {
	for {
		group := s.next()
		if group == nil {
			return
		}
		s.runGroup(s.groupCtx, group)
	}
}

// next takes the next group off the queue: calls from its head, up to
// maxGroupCalls calls or maxGroupBytes of payload, leaving for a later group
// each call that names a stream an earlier call of the group names, once. A
// group whose calls name each stream once is written set-based; one naming
// a stream twice goes through evident_append, call by call, in one round
// trip. (A call that names a stream twice itself always does.) Left once, a
// call joins the next group whatever it names: writers contending for one
// stream, which mostly fail on its version, are then answered together,
// not one round trip each. The calls left keep their order, so a stream's
// appends are still sent in the order they came. When the queue is empty it
// returns nil, and the committer that asked is done.
func (s *Store) next() []*call {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		s.committers--
		s.commitWG.Done()
		return nil
	}
	var (
		group []*call
		left  = s.queue[:0] // the calls that stay, in place
		named streamSet
		size  int
	)
	for i, c := range s.queue {
		if len(group) == maxGroupCalls || len(group) > 0 && size+c.size > maxGroupBytes {
			left = append(left, s.queue[i:]...)
			break
		}
		if len(group) > 0 && !c.waited && named.any(c.reqs) {
			c.waited = true
			left = append(left, c)
			continue
		}
		named.add(c.reqs)
		group = append(group, c)
		size += c.size
	}
	clear(s.queue[len(left):])
	s.queue = left
	s.groups.Add(1)
	s.grouped.Add(int64(len(group)))
	return group
}

// streamSet is a set of stream names. Groups are small: up to a few dozen
// names, a look at each costs less than a map, which it only takes past
// that.
type streamSet struct {
	names []string
	m     map[string]bool
}

func (n *streamSet) has(name string) bool {
	if n.m != nil {
		return n.m[name]
	}
	return slices.Contains(n.names, name)
}

func (n *streamSet) put(name string) {
	if n.m == nil && len(n.names) < 32 {
		n.names = append(n.names, name)
		return
	}
	if n.m == nil {
		n.m = make(map[string]bool, 2*len(n.names))
		for _, x := range n.names {
			n.m[x] = true
		}
	}
	n.m[name] = true
}

// any reports whether a stream of reqs is in the set.
func (n *streamSet) any(reqs []eventstore.AppendRequest) bool {
	return slices.ContainsFunc(reqs, func(r eventstore.AppendRequest) bool { return n.has(r.Stream) })
}

func (n *streamSet) add(reqs []eventstore.AppendRequest) {
	for _, r := range reqs {
		n.put(r.Stream)
	}
}

// runGroup writes group under ctx and answers every call in it.
func (s *Store) runGroup(ctx context.Context, group []*call) {
	results, err := s.writeGroup(ctx, group)
	if err == nil {
		s.committed()
		for i, c := range group {
			c.reply <- results[i]
		}
		return
	}
	if len(group) == 1 {
		group[0].reply <- callResult{err: err}
		return
	}
	// The whole statement failed: nothing of the group was written. Retry
	// each call alone, so that whatever failed fails only its own append.
	s.fallbacks.Add(1)
	for _, c := range group {
		if c.ctx.Err() != nil {
			c.reply <- callResult{err: fmt.Errorf("postgres eventstore: append: its group failed (%v), and the caller gave up: %w", err, c.ctx.Err())}
			continue
		}
		rs, err := s.writeGroup(s.groupCtx, []*call{c})
		if err != nil {
			c.reply <- callResult{err: err}
			continue
		}
		s.committed()
		c.reply <- rs[0]
	}
}

// committed wakes this process's readers at once and asks the notifier to
// wake the other processes'.
func (s *Store) committed() {
	s.wake()
	select {
	case s.notify <- struct{}{}:
	default: // a notification is already due; it covers this commit too
	}
}

// notifier sends one NOTIFY on the log's channel per wake-up, after the
// commits it announces, so that readers in other processes wake up. Sending
// it inside the append's transaction would be simpler, but PostgreSQL holds
// a cluster-wide lock from a notifying transaction's pre-commit until its
// commit is flushed, which would serialise every append. Out here one
// NOTIFY covers every commit made since the previous one was sent. If the
// process dies between a commit and its NOTIFY, other readers find the
// events at their fallbackWake.
//
// A NOTIFY is a transaction of its own, a round trip and about as much
// server work as an append's, so NOTIFYs are sent at most once per
// notifyEvery: the first commit after a quiet spell is announced at once,
// commits that follow within notifyEvery wait for the next one. At a few
// thousand appends a second that bounds its cost to a small share of an
// append's, and it keeps readers in other processes at most notifyEvery
// later than they would otherwise be. A NOTIFY carries no data, so it does
// not wait for a WAL flush (synchronous_commit off for that one statement's
// transaction): the notification is delivered at commit either way.
func (s *Store) notifier() {
	defer close(s.notifierDone)
	send := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = s.pool.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`, s.channel, s.sender) // best effort, see above
		s.notifies.Add(1)
	}
	var last time.Time
	for {
		select {
		case <-s.notify:
		case <-s.groupCtx.Done():
			select {
			case <-s.notify: // the last commits' notification
				send()
			default:
			}
			return
		}
		if wait := notifyEvery - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-s.groupCtx.Done(): // Close sends it without waiting
				t.Stop()
			}
		}
		select {
		case <-s.notify: // commits made while waiting: this NOTIFY covers them
		default:
		}
		last = time.Now()
		send()
	}
}

// groupArgs is the evident_append argument list for a group.
type groupArgs struct {
	cGuard, cRequest, cEvent []int32
	gStream                  []string
	gExpected, gCount        []int64
	rGuard                   []int32
	rExpected, rBefore       []int64
	eGuard                   []int32
	eOffset                  []int64
	eID                      []uuid.UUID
	eType                    []string
	eData, eMeta             [][]byte

	// per call: its guards' streams in the order of the function's starts,
	// and for each request the guard it uses and its last event's offset
	guards [][]string
	final  [][]finalAt
}

type finalAt struct {
	guard  int   // index into the call's guards
	offset int64 // the request's last event's offset on that stream
}

func buildGroupArgs(group []*call) *groupArgs {
	a := &groupArgs{}
	for _, c := range group {
		plans := planStreams(c.reqs)
		guardOf := make(map[string]int, len(plans))
		names := make([]string, len(plans))
		base := int32(len(a.gStream)) // guards before this call
		for i, p := range plans {
			guardOf[p.stream] = i
			names[i] = p.stream
			a.gStream = append(a.gStream, p.stream)
			a.gExpected = append(a.gExpected, p.expected)
			a.gCount = append(a.gCount, p.events)
		}
		used := make([]int64, len(plans)) // events placed on each stream so far
		finals := make([]finalAt, len(c.reqs))
		for ri, r := range c.reqs {
			g := guardOf[r.Stream]
			a.rGuard = append(a.rGuard, base+int32(g)+1)
			a.rExpected = append(a.rExpected, r.Expected)
			a.rBefore = append(a.rBefore, used[g])
			for _, e := range r.Events {
				used[g]++
				a.eGuard = append(a.eGuard, base+int32(g)+1)
				a.eOffset = append(a.eOffset, used[g])
				a.eID = append(a.eID, e.ID)
				a.eType = append(a.eType, e.Type)
				a.eData = append(a.eData, bytesOf(e.Data))
				a.eMeta = append(a.eMeta, bytesOf(e.Metadata))
			}
			finals[ri] = finalAt{guard: g, offset: used[g]}
		}
		a.cGuard = append(a.cGuard, int32(len(a.gStream)))
		a.cRequest = append(a.cRequest, int32(len(a.rGuard)))
		a.cEvent = append(a.cEvent, int32(len(a.eID)))
		a.guards = append(a.guards, names)
		a.final = append(a.final, finals)
	}
	return a
}

const appendGroup = `SELECT status, detail, tx, seq, starts FROM evident_append(
	$1::int[], $2::int[], $3::int[], $4::text[], $5::bigint[], $6::bigint[], $7::int[], $8::bigint[], $9::bigint[],
	$10::int[], $11::bigint[], $12::uuid[], $13::text[], $14::bytea[], $15::bytea[])`

// writeGroup writes group and maps each call's outcome: set-based when it
// can, else (or when the set-based statement declines) through
// evident_append. The error is for the group as a whole; per-call outcomes
// are in results.
func (s *Store) writeGroup(ctx context.Context, group []*call) ([]callResult, error) {
	if a := buildSetArgs(group); a != nil {
		write := s.writeSet
		if eachOK(group) {
			write = s.writeEach
		}
		out, err := write(ctx, group, a)
		if err == nil {
			s.setGroups.Add(1)
			return out, nil
		}
		if !declined(ctx, err) {
			return nil, wrap(ctx, "append", err)
		}
		s.declined.Add(1)
	}
	return s.writeCalls(ctx, group)
}

// writeCalls runs one evident_append for group.
func (s *Store) writeCalls(ctx context.Context, group []*call) ([]callResult, error) {
	a := buildGroupArgs(group)
	var rows []groupRow
	err := s.inTx(ctx, func(q querier) error {
		var err error
		rows, err = queryGroup(ctx, q, []any{a.cGuard, a.cRequest, a.cEvent, a.gStream, a.gExpected, a.gCount,
			a.rGuard, a.rExpected, a.rBefore, a.eGuard, a.eOffset, a.eID, a.eType, a.eData, a.eMeta})
		return err
	})
	if err != nil {
		return nil, wrap(ctx, "append", err)
	}
	if len(rows) != len(group) {
		return nil, fmt.Errorf("postgres eventstore: append: %d results for %d appends", len(rows), len(group))
	}
	out := make([]callResult, len(group))
	for i, row := range rows {
		out[i] = row.result(a.guards[i], a.final[i])
	}
	return out, nil
}

// inTx runs fn's one statement as a transaction of its own: outside a
// transaction block, where PostgreSQL commits it before it answers, or, with
// the test hook, in an explicit transaction with the hook before COMMIT.
func (s *Store) inTx(ctx context.Context, fn func(q querier) error) error {
	if s.beforeCommit == nil {
		return fn(s.pool)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return err
	}
	s.beforeCommit(ctx)
	return tx.Commit(ctx)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type groupRow struct {
	status  int32
	detail  *string
	tx, seq *int64
	starts  []int64
}

func queryGroup(ctx context.Context, q querier, args []any) ([]groupRow, error) {
	rows, err := q.Query(ctx, appendGroup, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (groupRow, error) {
		var g groupRow
		err := row.Scan(&g.status, &g.detail, &g.tx, &g.seq, &g.starts)
		return g, err
	})
}

func (g groupRow) result(guards []string, finals []finalAt) callResult {
	detail := ""
	if g.detail != nil {
		detail = *g.detail
	}
	switch g.status {
	case 0:
		if g.tx == nil || g.seq == nil || len(g.starts) != len(guards) {
			return callResult{err: errors.New("postgres eventstore: append: malformed result")}
		}
		res := eventstore.AppendResult{
			Position: eventstore.Position{Commit: uint64(*g.tx), Prepare: uint64(*g.seq)},
			Versions: make([]int64, len(finals)),
		}
		for i, f := range finals {
			res.Versions[i] = g.starts[f.guard] + f.offset
		}
		return callResult{res: res}
	case 1:
		return callResult{err: fmt.Errorf("postgres eventstore: %s: %w", detail, eventstore.ErrWrongVersion)}
	default:
		return callResult{err: fmt.Errorf("postgres eventstore: %s: %w", detail, errIDTaken)}
	}
}
