package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"
)

// logInfo is what the generated log holds, for the queries.
type logInfo struct {
	events  int
	users   []uuid.UUID
	admins  []string
	t0, t1  time.Time
	actions []string
}

// genLog appends about n events of realistic user lives (registration with
// its e-mail claim, activation request, activation, log-in, log-out, profile
// update) through Evident's own Append, users interleaved in blocks of 100.
func genLog(ctx context.Context, st eventstore.Store, n int) (logInfo, error) {
	const perUser = 7
	nUsers := max(1, n/perUser)
	info := logInfo{t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		actions: []string{"user_created", "user_activation_requested", "user_activated", "user_logged_in", "user_logged_out", "user_updated"}}
	step := 30 * 24 * time.Hour / time.Duration(nUsers*perUser)
	for range 20 {
		info.admins = append(info.admins, uuid.NewString())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	idx := 0
	stamp := func(actor string) (uuid.UUID, time.Time, []byte) {
		id := uuid.Must(uuid.NewV7())
		t := info.t0.Add(time.Duration(idx) * step)
		idx++
		md, _ := json.Marshal(eventstore.Metadata{EventID: id, OccurredAt: t, ActorID: actor, CorrelationID: id.String(), SchemaVersion: 1})
		return id, t, md
	}
	at := func() time.Time { return info.t0.Add(time.Duration(idx) * step) }
	ev := func(actor string, e interface{ EventType() string }) eventstore.EventData {
		id, _, md := stamp(actor)
		data, _ := json.Marshal(e)
		return eventstore.EventData{ID: id, Type: e.EventType(), Data: data, Metadata: md}
	}
	tokenHash := func() string {
		var b [32]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		s := sha256.Sum256(b[:])
		return hex.EncodeToString(s[:])
	}
	const block = 100
	for first := 0; first < nUsers; first += block {
		ids := make([]uuid.UUID, min(block, nUsers-first))
		sessions := make([]uuid.UUID, len(ids))
		hashes := make([]string, len(ids))
		for i := range ids {
			ids[i], sessions[i], hashes[i] = uuid.Must(uuid.NewV7()), uuid.New(), tokenHash()
		}
		info.users = append(info.users, ids...)
		admin := func() string { return info.admins[rng.IntN(len(info.admins))] }
		phases := []func(i int, id uuid.UUID) []eventstore.AppendRequest{
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				addr := fmt.Sprintf("user-%d@example.com", first+i)
				return []eventstore.AppendRequest{
					{Stream: streamName(id), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("anonymous",
						user.Created{UserID: id, Email: addr, Name: fmt.Sprintf("User %d", first+i), Roles: []string{user.RoleMember}})}},
					{Stream: email.Stream(addr), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("anonymous", email.Claimed{UserID: id})}},
				}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				t := at()
				return []eventstore.AppendRequest{{Stream: streamName(id), Expected: 0, Events: []eventstore.EventData{ev(admin(),
					user.ActivationRequested{UserID: id, TokenHash: hashes[i], ExpiresAt: t.Add(24 * time.Hour), RequestedBy: admin()})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: streamName(id), Expected: 1, Events: []eventstore.EventData{ev(id.String(),
					user.Activated{UserID: id, ActivatedBy: id.String(), Method: user.MethodToken, TokenHash: hashes[i]})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				t := at()
				return []eventstore.AppendRequest{{Stream: "session-" + sessions[i].String(), Expected: eventstore.NoStream, Events: []eventstore.EventData{ev(id.String(),
					session.LoggedIn{SessionID: sessions[i], UserID: id, TokenHash: tokenHash(), ExpiresAt: t.Add(24 * time.Hour)})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				return []eventstore.AppendRequest{{Stream: "session-" + sessions[i].String(), Expected: 0, Events: []eventstore.EventData{ev(id.String(),
					session.LoggedOut{SessionID: sessions[i], UserID: id})}}}
			},
			func(i int, id uuid.UUID) []eventstore.AppendRequest {
				name := fmt.Sprintf("User %d (renamed)", first+i)
				return []eventstore.AppendRequest{{Stream: streamName(id), Expected: 2, Events: []eventstore.EventData{ev(admin(),
					user.Updated{UserID: id, Name: &name, UpdatedBy: admin()})}}}
			},
		}
		for _, phase := range phases {
			var reqs []eventstore.AppendRequest
			for i, id := range ids {
				reqs = append(reqs, phase(i, id)...)
			}
			if _, err := st.Append(ctx, reqs...); err != nil {
				return info, fmt.Errorf("generate log: %w", err)
			}
		}
	}
	info.events = idx
	info.t1 = info.t0.Add(time.Duration(idx) * step)
	return info, nil
}

// rawRead reads the whole log in its order with one plain query, scanning
// every column, and returns events per second.
func rawRead(ctx context.Context, a *evidentApp) measure {
	start := time.Now()
	n := 0
	switch {
	case a.pool != nil:
		rows, err := a.pool.Query(ctx, `SELECT tx::text::bigint, seq, event_id, stream, version, type, data, metadata, recorded_at FROM events ORDER BY tx, seq`)
		if err != nil {
			return measure{Err: err}
		}
		for rows.Next() {
			var (
				tx, seq, version int64
				id               uuid.UUID
				stream, typ      string
				data, md         []byte
				at               time.Time
			)
			if err := rows.Scan(&tx, &seq, &id, &stream, &version, &typ, &data, &md, &at); err != nil {
				rows.Close()
				return measure{Err: err}
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return measure{Err: err}
		}
	default:
		rows, err := a.lite.Read.QueryContext(ctx, `SELECT position, event_id, stream, version, type, data, metadata, recorded_at FROM events ORDER BY position`)
		if err != nil {
			return measure{Err: err}
		}
		for rows.Next() {
			var (
				pos, version    int64
				id, stream, typ string
				data, md        []byte
				at              string
			)
			if err := rows.Scan(&pos, &id, &stream, &version, &typ, &data, &md, &at); err != nil {
				rows.Close()
				return measure{Err: err}
			}
			n++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return measure{Err: err}
		}
	}
	return measure{Value: float64(n) / time.Since(start).Seconds()}
}

// prefix hides the events after last, so that a rebuild replays a prefix
// of the log.
type prefix struct {
	projections.Source
	last eventstore.Position
}

func (p prefix) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	evs, err := p.Source.ReadAll(ctx, after, limit)
	for i, e := range evs {
		if p.last.Less(e.Position) {
			return evs[:i], err
		}
	}
	return evs, err
}

// memStats is what a replay cost in memory.
type memStats struct {
	allocPerEvent float64 // bytes allocated per replayed event
	peakHeap      float64 // MiB of heap objects at the highest sample
}

// rebuildOnce runs projections.Rebuild over src (all projections) and
// returns the replay rate over events and the memory it took.
func rebuildOnce(ctx context.Context, a *evidentApp, src projections.Source, events int) (measure, memStats) {
	// Start from empty read models every time (untimed): on PostgreSQL a
	// rebuild catches its shadow tables up to the live checkpoint, which a
	// prefix replay must not find ahead of it.
	for _, p := range projections.All() {
		if err := a.rm.Reset(ctx, p.Name(), p.(projections.Tabled).Tables()...); err != nil {
			return measure{Err: fmt.Errorf("reset %s: %w", p.Name(), err)}, memStats{}
		}
	}
	runtime.GC()
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(samples)
	alloc0 := samples[0].Value.Uint64()
	var peak atomic.Uint64
	peak.Store(samples[1].Value.Uint64())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				metrics.Read(s)
				if v := s[0].Value.Uint64(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	})
	start := time.Now()
	err := projections.Rebuild(ctx, src, a.rm, projections.All())
	el := time.Since(start)
	close(done)
	wg.Wait()
	metrics.Read(samples)
	ms := memStats{
		allocPerEvent: float64(samples[0].Value.Uint64()-alloc0) / float64(events),
		peakHeap:      float64(peak.Load()) / (1 << 20),
	}
	if err != nil {
		return measure{Err: err}, ms
	}
	return measure{Value: float64(events) / el.Seconds()}, ms
}

// scenarioReplay generates a log, then interleaves a raw ordered read of it
// with rebuilds of every read model from it (and from its first quarter,
// for the heap's growth), then times the audit queries on the result.
func scenarioReplay(ctx context.Context, p profile, w where, backend string, logf logger) []row {
	section := backend + " replay and queries"
	a, err := openApp(ctx, w, backend, 12)
	if err != nil {
		return []row{{Section: section, Name: "replay", Evident: []measure{{Err: err}}}}
	}
	defer a.Close()
	t := time.Now()
	info, err := genLog(ctx, a.events, p.rebuildEvents)
	if err != nil {
		return []row{{Section: section, Name: "replay", Evident: []measure{{Err: err}}}}
	}
	logf("  %s: generated %d events in %s", section, info.events, time.Since(t).Round(time.Millisecond))
	quarter := info.events / 4
	head, err := a.events.ReadAll(ctx, eventstore.Position{}, quarter)
	if err != nil || len(head) == 0 {
		return []row{{Section: section, Name: "replay", Evident: []measure{{Err: fmt.Errorf("read prefix: %v", err)}}}}
	}
	cut := prefix{Source: a.events, last: head[len(head)-1].Position}
	quarter = len(head)
	head = nil

	// goes replays the same log on PostgreSQL (it has no SQLite backend).
	var goes *goesReplay
	if a.pool != nil {
		t := time.Now()
		g, n, err := openGoesReplay(ctx, w, a.events)
		if err != nil {
			logf("  %s: goes: %v", section, err)
		} else {
			goes = g
			defer goes.Close()
			logf("  %s: copied %d events into goes in %s", section, n, time.Since(t).Round(time.Millisecond))
		}
	}

	var full, part []memStats
	lastFull := false
	written := 0 // rows kept for the raw write
	cs := []contender{
		{"evident", roleEvident, func(ctx context.Context) measure {
			m, ms := rebuildOnce(ctx, a, a.events, info.events)
			full = append(full, ms)
			lastFull = true
			return m
		}},
		{"raw write", roleDiag, func(ctx context.Context) measure {
			if written == 0 {
				// The rows of a rebuild of the whole log, read back once.
				if !lastFull {
					if m, _ := rebuildOnce(ctx, a, a.events, info.events); m.Err != nil {
						return m
					}
				}
				n, err := keepRebuilt(ctx, a)
				if err != nil {
					return measure{Err: fmt.Errorf("keep the rebuilt rows: %w", err)}
				}
				written = n
			}
			lastFull = false // no checkpoints: the queries below want a rebuild
			return rawWrite(ctx, a, info.events)
		}},
		{"raw ordered read", roleRaw, func(ctx context.Context) measure { return rawRead(ctx, a) }},
		{"evident N/4", rolePeer, func(ctx context.Context) measure {
			m, ms := rebuildOnce(ctx, a, cut, quarter)
			part = append(part, ms)
			lastFull = false
			return m
		}},
	}
	if goes != nil {
		cs = append(cs, contender{"goes", rolePeer, goes.replay})
	}
	res := interleave(ctx, section, p.rounds, cs, logf)
	// The last rebuild must be of the whole log, for the queries below.
	if !lastFull {
		if m, _ := rebuildOnce(ctx, a, a.events, info.events); m.Err != nil {
			logf("  %s: final rebuild: %v", section, m.Err)
		}
	}

	scale := fmt.Sprintf("%s events", count(info.events))
	rows := []row{{
		ID: backend + "/rebuild", Section: section,
		Name: fmt.Sprintf("rebuild all 4 read models from %s (one read of the log, batches folded per projection)", scale),
		Unit: "events/s", Evident: res["evident"], Raw: res["raw ordered read"], RawName: "raw ordered read",
		Target: target{Text: "≥ 0.6× raw ordered read", MinRaw: 0.6},
	}}
	if goes != nil {
		rows[0].Peer, rows[0].PeerName = res["goes"], "goes replay"
		rows[0].Target = target{Text: "≥ 0.6× raw ordered read, ≥ 1.5× goes' replay", MinRaw: 0.6, MinPeer: 1.5}
		rows[0].Notes = append(rows[0].Notes, "goes replay: every event read back through its event.Store.Query in time order and decoded by its codec, counted in memory; nothing written (goes has no read-model writer), so a lower bound of a goes rebuild")
	}
	if written > 0 {
		rows = append(rows, row{
			ID: backend + "/rebuild/write", Section: section,
			Name: fmt.Sprintf("rebuild all 4 read models from %s — diagnostic: vs writing its rows raw", scale),
			Unit: "events/s", Evident: res["evident"], Raw: res["raw write"], RawName: "raw write",
			Notes: []string{fmt.Sprintf("raw write: the %s rows the rebuild leaves in the four tables, kept in copies, written into the same emptied, indexed tables by one INSERT … SELECT per table in one transaction; no log read, no decoding, no row sent by the client, no upsert: the ceiling of the rebuild's writes alone, per event of the log",
				count(written))},
		})
	}
	allocs := func(ms []memStats) []measure {
		var out []measure
		for _, m := range ms {
			out = append(out, measure{Value: m.allocPerEvent})
		}
		return out
	}
	peaks := func(ms []memStats) []measure {
		var out []measure
		for _, m := range ms {
			out = append(out, measure{Value: m.peakHeap})
		}
		return out
	}
	rows = append(rows, row{
		ID: backend + "/alloc", Section: section, LowerBetter: true,
		Name:    fmt.Sprintf("memory allocated per replayed event (rebuild of %s, all 4 projections)", scale),
		Unit:    "bytes/event",
		Evident: allocs(full), Raw: allocs(part), RawName: fmt.Sprintf("N/4 (%s)", count(quarter)),
		Target: target{Text: "≤ 2048 B/event", Max: 2048},
	}, row{
		ID: backend + "/peak", Section: section, LowerBetter: true,
		Name:    fmt.Sprintf("peak heap during the rebuild: %s vs its first quarter", scale),
		Unit:    "MiB",
		Evident: peaks(full), Raw: peaks(part), RawName: fmt.Sprintf("N/4 (%s)", count(quarter)),
		Target: target{Text: "independent of event count (≤ 1.5× from N/4 to N)", MaxRatio: 1.5},
		Notes:  []string{"evident/raw here is the growth from N/4 to N events"},
	})
	rows = append(rows, auditRows(ctx, p, a, info, section, logf)...)
	return rows
}

// auditKinds are the audit queries a client runs, as readmodels.Audit builds them.
type auditKind struct {
	name   string
	filter func(rng *rand.Rand) readmodels.AuditFilter
	// sql is readmodels.Audit's statement for this filter, for EXPLAIN
	// (kept in step with readmodels/queries.go by hand).
	sql  string
	args func(f readmodels.AuditFilter) []any
}

const auditCols = `event_id, event_type, aggregate_id, aggregate_type, user_id, actor_id, action, resource, resource_id, details, metadata, occurred_at, pos_commit, pos_prepare`

func auditKinds(info logInfo) []auditKind {
	span := info.t1.Sub(info.t0)
	return []auditKind{
		{
			name: "by user",
			filter: func(rng *rand.Rand) readmodels.AuditFilter {
				id := info.users[rng.IntN(len(info.users))]
				return readmodels.AuditFilter{UserID: &id, Limit: 50}
			},
			sql:  `SELECT ` + auditCols + ` FROM audit WHERE user_id = $1 ORDER BY pos_commit ASC, pos_prepare ASC LIMIT $2`,
			args: func(f readmodels.AuditFilter) []any { return []any{f.UserID.String(), 51} },
		},
		{
			name: "by actor",
			filter: func(rng *rand.Rand) readmodels.AuditFilter {
				return readmodels.AuditFilter{ActorID: info.admins[rng.IntN(len(info.admins))], Limit: 50}
			},
			sql:  `SELECT ` + auditCols + ` FROM audit WHERE actor_id = $1 ORDER BY pos_commit ASC, pos_prepare ASC LIMIT $2`,
			args: func(f readmodels.AuditFilter) []any { return []any{f.ActorID, 51} },
		},
		{
			name: "by action + 1 h window",
			filter: func(rng *rand.Rand) readmodels.AuditFilter {
				from := info.t0.Add(time.Duration(rng.Int64N(int64(span - time.Hour))))
				return readmodels.AuditFilter{Action: info.actions[rng.IntN(len(info.actions))], From: from, To: from.Add(time.Hour), Limit: 50}
			},
			sql: `SELECT ` + auditCols + ` FROM audit WHERE action = $1 AND occurred_at >= $2 AND occurred_at < $3 ORDER BY pos_commit ASC, pos_prepare ASC LIMIT $4`,
			args: func(f readmodels.AuditFilter) []any {
				return []any{f.Action, f.From.UnixMicro(), f.To.UnixMicro(), 51}
			},
		},
	}
}

// auditRows times each query kind (and paging through one action) and
// checks its plan for sequential scans.
func auditRows(ctx context.Context, p profile, a *evidentApp, info logInfo, section string, logf logger) []row {
	if a.pool != nil {
		// As autovacuum would shortly after a rebuild.
		if _, err := a.pool.Exec(ctx, `ANALYZE`); err != nil {
			logf("  analyze: %v", err)
		}
	}
	kinds := auditKinds(info)
	var rows []row
	rng := rand.New(rand.NewPCG(3, 4))
	for _, k := range kinds {
		var p99s, p50s []measure
		for range p.rounds {
			var ds []time.Duration
			for range p.auditQueries {
				f := k.filter(rng)
				t := time.Now()
				page, err := a.rm.Audit(ctx, f)
				ds = append(ds, time.Since(t))
				if err != nil {
					p99s = append(p99s, measure{Err: err})
					break
				}
				_ = page
			}
			p99s = append(p99s, measure{Value: percentileMs(ds, 99)})
			p50s = append(p50s, measure{Value: percentileMs(ds, 50)})
		}
		plan, scan := explain(ctx, a, k.sql, k.args(k.filter(rng)))
		rows = append(rows, auditRow(section, "audit query "+k.name+", 50 rows", p99s, p50s, plan, scan))
	}
	// Paging: 10 pages of 50 through the most common action.
	var p99s, p50s []measure
	for range p.rounds {
		var ds []time.Duration
		for range max(1, p.auditQueries/10) {
			f := readmodels.AuditFilter{Action: "user_created", Limit: 50, Cursor: ""}
			for range 10 {
				t := time.Now()
				page, err := a.rm.Audit(ctx, f)
				ds = append(ds, time.Since(t))
				if err != nil || page.NextCursor == "" {
					break
				}
				f.Cursor = page.NextCursor
			}
		}
		p99s = append(p99s, measure{Value: percentileMs(ds, 99)})
		p50s = append(p50s, measure{Value: percentileMs(ds, 50)})
	}
	plan, scan := explain(ctx, a, `SELECT `+auditCols+` FROM audit WHERE action = $1 AND (pos_commit, pos_prepare) > ($2, $3) ORDER BY pos_commit ASC, pos_prepare ASC LIMIT $4`,
		[]any{"user_created", int64(1), int64(1), 51})
	rows = append(rows, auditRow(section, "audit paging, 10 pages of 50 by action (keyset cursor)", p99s, p50s, plan, scan))
	return rows
}

func auditRow(section, name string, p99s, p50s []measure, plan string, scan bool) row {
	notes := []string{"p50 " + cell(p50s) + " ms", "plan: " + plan}
	return row{
		ID: section + "/" + name, Section: section, Name: name + " (p99)", Unit: "ms", LowerBetter: true,
		Evident: p99s, Notes: notes,
		Target: target{Text: "p99 ≤ 10 ms, no seq scan", Max: 10, Extra: func(*row) (bool, string) {
			if scan {
				return false, "sequential scan in plan"
			}
			return true, ""
		}},
	}
}

// explain returns a one-line plan and whether it scans a table sequentially.
func explain(ctx context.Context, a *evidentApp, q string, args []any) (string, bool) {
	prefix := "EXPLAIN QUERY PLAN "
	if a.pool != nil {
		prefix = "EXPLAIN "
	}
	rows, err := a.rmRead.QueryContext(ctx, prefix+q, args...)
	if err != nil {
		return "explain failed: " + trim(err.Error(), 100), false
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "explain failed: " + err.Error(), false
		}
		// PostgreSQL: one text column; SQLite: id, parent, notused, detail.
		l := fmt.Sprint(vals[len(vals)-1])
		if b, ok := vals[len(vals)-1].([]byte); ok {
			l = string(b)
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	scan := false
	var short []string
	for _, l := range lines {
		if strings.Contains(l, "Seq Scan") || (strings.HasPrefix(l, "SCAN ") && !strings.Contains(l, "USING")) {
			scan = true
		}
		if a.pool != nil {
			// Keep the node names only.
			if i := strings.Index(l, "  (cost"); i > 0 {
				l = l[:i]
			}
			l = strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(l, "->")), "")
			if strings.HasPrefix(l, "Index Cond") || strings.HasPrefix(l, "Filter") || strings.HasPrefix(l, "Sort Key") || strings.HasPrefix(l, "Recheck Cond") {
				continue
			}
		}
		short = append(short, l)
	}
	return strings.Join(short, " → "), scan
}
