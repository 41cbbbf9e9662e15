package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// backend is a database family: the scenarios run once per backend.
type backend struct {
	name     string // "PostgreSQL" or "SQLite"
	evident  system
	rawWrite system // single-row INSERT per transaction
	rawOpt   system // read version + INSERT + COMMIT
	peers    []system
	// diag are extra raw variants that explain a gap (full profile only).
	diag []system
}

func backends(p profile) []backend {
	pg := backend{
		name:     "PostgreSQL",
		evident:  system{"evident", openEvidentPG},
		rawWrite: system{"raw INSERT", openRawPG(false)},
		rawOpt:   system{"raw read+INSERT", openRawPG(true)},
	}
	lite := backend{
		name:     "SQLite",
		evident:  system{"evident", openEvidentSQLite},
		rawWrite: system{"raw INSERT", openRawSQLite(false)},
		rawOpt:   system{"raw read+INSERT", openRawSQLite(true)},
	}
	if p.peers {
		pg.peers = []system{{"goes", openGoes}, {"hallgren", openHallgrenPG}}
		pg.diag = []system{{"raw INSERT+NOTIFY", openRawPGNotify}}
		lite.peers = []system{{"hallgren", openHallgrenSQLite}}
	}
	return []backend{pg, lite}
}

// appendRun opens a fresh database for sys, prepares it, drives op and closes it.
func appendRun(w where, sys system, conns int, prepare func(ctx context.Context, a appender) error,
	run func(ctx context.Context, a appender) measure) func(ctx context.Context) measure {
	return func(ctx context.Context) measure {
		a, err := sys.open(ctx, w, conns)
		if err != nil {
			return measure{Err: fmt.Errorf("open %s: %w", sys.name, err)}
		}
		defer a.Close()
		if prepare != nil {
			if err := prepare(ctx, a); err != nil {
				return measure{Err: fmt.Errorf("prepare %s: %w", sys.name, err)}
			}
		}
		return run(ctx, a)
	}
}

func contenders(w where, b backend, raw system, conns int, prepare func(context.Context, appender) error,
	run func(context.Context, appender) measure) []contender {
	cs := []contender{
		{b.evident.name, roleEvident, appendRun(w, b.evident, conns, prepare, run)},
		{raw.name, roleRaw, appendRun(w, raw, conns, prepare, run)},
	}
	for _, p := range b.peers {
		cs = append(cs, contender{p.name, rolePeer, appendRun(w, p, conns, prepare, run)})
	}
	return cs
}

// rowsFor turns the results of one scenario into one row per peer (or one
// row without a peer).
func rowsFor(base row, cs []contender, res map[string][]measure) (out []row) {
	var evident, raw string
	var peers, diags []string
	for _, c := range cs {
		switch c.role {
		case roleEvident:
			evident = c.name
		case roleRaw:
			raw = c.name
		case roleDiag:
			diags = append(diags, c.name)
		default:
			peers = append(peers, c.name)
		}
	}
	var extra []row
	for _, d := range diags {
		r := base
		r.Name += " — diagnostic: vs " + d
		r.ID += "/diag"
		r.Evident, r.Raw, r.RawName, r.Target = res[evident], res[d], d, target{}
		r.Notes = []string{"explains the gap: the same INSERT with pg_notify in its transaction, as Evident's append sends"}
		extra = append(extra, r)
	}
	defer func() { out = append(out, extra...) }()
	base.Evident = res[evident]
	base.Raw = res[raw]
	base.RawName = raw
	if len(peers) == 0 {
		return []row{base}
	}
	for _, p := range peers {
		r := base
		r.Peer, r.PeerName = res[p], p
		out = append(out, r)
	}
	return out
}

// scenarioNewStream: every append creates a new stream (expected: no
// stream), one event each.
func scenarioNewStream(ctx context.Context, p profile, w where, b backend, writers int, logf logger) []row {
	run := func(ctx context.Context, a appender) measure {
		rate, c := drive(ctx, writers, p.dur, func(ctx context.Context, _ int, _ *rand.Rand, c *counters) {
			id := uuid.New()
			if err := a.Append(ctx, id, -1, newPayload(id)); err != nil {
				c.fail(err)
				return
			}
			c.ops.Add(1)
		})
		return c.measure(rate)
	}
	label := fmt.Sprintf("%s new stream ×%d", b.name, writers)
	cs := contenders(w, b, b.rawWrite, writers, nil, run)
	if writers >= 8 {
		for _, d := range b.diag {
			cs = append(cs, contender{d.name, roleDiag, appendRun(w, d, writers, nil, run)})
		}
	}
	res := interleave(ctx, label, p.rounds, cs, logf)
	return rowsFor(row{
		ID: fmt.Sprintf("%s/new/%d", b.name, writers), Section: b.name + " appends",
		Name: fmt.Sprintf("append 1 event to a new stream, %d writer%s", writers, plural(writers)),
		Unit: "appends/s", Target: newStreamTarget(b.name, writers),
	}, cs, res)
}

// scenarioZipf: appends to existing streams with the expected version, the
// stream drawn from a Zipf distribution over users (s=1.1). Each writer
// remembers the versions it learned; a conflict re-reads the stream through
// the system's read path and counts as a retry.
func scenarioZipf(ctx context.Context, p profile, w where, b backend, writers int, logf logger) []row {
	users := make([]uuid.UUID, p.users)
	for i := range users {
		users[i] = uuid.New()
	}
	var versions []atomic.Int64
	prepare := func(ctx context.Context, a appender) error {
		versions = make([]atomic.Int64, len(users)) // every user is at version 0 after the seed
		return a.Seed(ctx, users)
	}
	run := func(ctx context.Context, a appender) measure {
		zipfs := make([]*rand.Zipf, writers)
		rate, c := drive(ctx, writers, p.dur, func(ctx context.Context, wi int, rng *rand.Rand, c *counters) {
			if zipfs[wi] == nil {
				zipfs[wi] = rand.NewZipf(rng, 1.1, 1, uint64(len(users)-1))
			}
			i := zipfs[wi].Uint64()
			optimisticOnce(ctx, a, users[i], &versions[i], c)
		})
		return c.measure(rate)
	}
	label := fmt.Sprintf("%s zipf ×%d", b.name, writers)
	cs := contenders(w, b, b.rawOpt, writers, prepare, run)
	res := interleave(ctx, label, p.rounds, cs, logf)
	return rowsFor(row{
		ID: fmt.Sprintf("%s/zipf/%d", b.name, writers), Section: b.name + " appends",
		Name: fmt.Sprintf("append to an existing stream with expected version, Zipf over %s users, %d writer%s", count(p.users), writers, plural(writers)),
		Unit: "appends/s", Target: zipfTarget(b.name, writers),
	}, cs, res)
}

// optimisticOnce tries one append at the version last seen; on a conflict
// it re-reads the stream's version and counts a retry.
func optimisticOnce(ctx context.Context, a appender, id uuid.UUID, v *atomic.Int64, c *counters) {
	exp := v.Load()
	err := a.Append(ctx, id, exp, newPayload(id))
	switch {
	case err == nil:
		c.ops.Add(1)
		raise(v, exp+1)
	case errors.Is(err, errConflict):
		c.retries.Add(1)
		cur, err := a.Version(ctx, id)
		if err != nil {
			c.fail(err)
			return
		}
		raise(v, cur)
	default:
		c.fail(err)
	}
}

// raise moves v up to n, never down.
func raise(v *atomic.Int64, n int64) {
	for {
		cur := v.Load()
		if cur >= n || v.CompareAndSwap(cur, n) {
			return
		}
	}
}

// scenarioHot: writers append to one stream with the expected version.
// Goodput counts successful appends; afterwards the stream must hold
// versions 0..n exactly once.
func scenarioHot(ctx context.Context, p profile, w where, b backend, writers int, logf logger) []row {
	var (
		id uuid.UUID
		v  atomic.Int64
	)
	prepare := func(ctx context.Context, a appender) error {
		id = uuid.New()
		v.Store(0)
		return a.Seed(ctx, []uuid.UUID{id})
	}
	run := func(ctx context.Context, a appender) measure {
		rate, c := drive(ctx, writers, p.dur, func(ctx context.Context, _ int, _ *rand.Rand, c *counters) {
			optimisticOnce(ctx, a, id, &v, c)
		})
		m := c.measure(rate)
		vs, err := a.Versions(ctx, id)
		if err != nil {
			m.Err = fmt.Errorf("read back: %w", err)
			return m
		}
		want := c.ops.Load() + 1
		seen := make(map[int64]bool, len(vs))
		for _, x := range vs {
			if seen[x] || x < 0 || x >= want {
				m.Dups++
			}
			seen[x] = true
		}
		if int64(len(vs)) != want {
			m.Dups += abs(int64(len(vs)) - want)
		}
		return m
	}
	label := fmt.Sprintf("%s hot stream ×%d", b.name, writers)
	cs := contenders(w, b, b.rawOpt, writers, prepare, run)
	res := interleave(ctx, label, p.rounds, cs, logf)
	return rowsFor(row{
		ID: fmt.Sprintf("%s/hot/%d", b.name, writers), Section: b.name + " appends",
		Name: fmt.Sprintf("one hot stream, %d writers, expected version (goodput)", writers),
		Unit: "appends/s", Target: hotTarget(),
	}, cs, res)
}

// scenarioBatch: one writer appends 100 events per transaction to new streams.
func scenarioBatch(ctx context.Context, p profile, w where, b backend, logf logger) []row {
	const n = 100
	run := func(ctx context.Context, a appender) measure {
		rate, c := drive(ctx, 1, p.dur, func(ctx context.Context, _ int, _ *rand.Rand, c *counters) {
			id := uuid.New()
			ps := make([]payload, n)
			for i := range ps {
				ps[i] = newPayload(id)
			}
			if err := a.AppendBatch(ctx, id, ps); err != nil {
				c.fail(err)
				return
			}
			c.ops.Add(n)
		})
		return c.measure(rate)
	}
	label := fmt.Sprintf("%s batch of 100", b.name)
	cs := contenders(w, b, b.rawWrite, 2, nil, run)
	res := interleave(ctx, label, p.rounds, cs, logf)
	return rowsFor(row{
		ID: b.name + "/batch100", Section: b.name + " appends",
		Name: "append 100 events to a new stream in one transaction, 1 writer",
		Unit: "events/s", Target: target{},
	}, cs, res)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

type logger func(string, ...any)

var _ = time.Second
