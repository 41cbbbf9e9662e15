package projections

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"evident/eventstore"
	"evident/readmodels"
)

// maxSwitchAttempts bounds how often a rebuild tries to swap a shadow in
// (each failed attempt catches the shadow up again first).
const maxSwitchAttempts = 10

// Rebuild replays the projections ps from the start of the log, so that
// their tables become what the log says. It appends nothing and runs no
// reactor, so a replay has no side effects. Each projection must be Tabled.
// It returns ctx.Err() when ctx ended first.
//
// The projections of this package are replayed together: the log is read
// once, each event decoded once, and each batch folded in memory into the
// rows it changes, written once each (readmodels.Replay). Other projections
// are replayed event by event, each reading the log itself.
//
// On PostgreSQL it rebuilds without downtime, beside running Runners (of
// this or other processes): each projection is replayed into shadow tables
// (readmodels.Shadow) while the live ones keep serving, then the shadow is
// swapped in, caught up to the live checkpoint or beyond, in one transaction
// that also moves the checkpoint. Queries wait for that transaction, never
// see a half-built table, and never see fewer rows than before. A live
// worker whose batch started before the switch finds its checkpoint moved,
// rolls back and goes on from the switched tables' position. The parked
// events of a projection are replaced by those of its replay. Two rebuilds
// of one projection take turns (a lease named "rebuild <projection>").
//
// On SQLite it resets the projections (tables, checkpoints, parked events)
// and refills the tables in place: run it while no Runner drives them (the
// embedded store's directory lock keeps `evident serve` out).
func Rebuild(ctx context.Context, src Source, rm *readmodels.Store, ps []Projection) error {
	r := NewRunner(src, rm, ps, Options{})
	if err := r.validate(); err != nil {
		return err
	}
	for _, p := range ps {
		if _, ok := p.(Tabled); !ok {
			return fmt.Errorf("projections: rebuild %s: it does not name its tables", p.Name())
		}
	}
	if rm.Dialect() == readmodels.DialectPostgres {
		return rebuildShadowed(ctx, r, ps)
	}
	return rebuildInPlace(ctx, r, ps)
}

func rebuildInPlace(ctx context.Context, r *Runner, ps []Projection) error {
	for _, p := range ps {
		if err := r.rm.Reset(ctx, p.Name(), p.(Tabled).Tables()...); err != nil {
			return fmt.Errorf("projections: rebuild %s: %w", p.Name(), err)
		}
	}
	if targets, ok := replayTargets(ps, nil); ok {
		return replay(ctx, r, targets)
	}
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { r.run(ctx, w, true) })
	}
	wg.Wait()
	return ctx.Err()
}

// replayBatch is how many events a replay reads, and writes in one
// transaction. It bounds the replay's memory (two batches are held: one
// written, one read ahead; a few MiB). Each batch costs a dozen round trips
// and rewrites the rows it shares with the next one, so fewer, larger
// batches write less; but at 4000 the peak heap was three times that at
// 1000 (25 against 7 MiB). (A variable only so that the tests can make
// batches small.)
var replayBatch = 2000

// target is a projection a replay writes: its checkpoint key, its folder,
// and the shadow its rows go to (nil: the live tables).
type target struct {
	name string
	f    folder
	sh   *readmodels.Shadow
}

// replayTargets returns the targets of ps (shadows[i] is ps[i]'s shadow, or
// shadows is nil), or false when a projection cannot be replayed a batch
// at a time.
func replayTargets(ps []Projection, shadows []*readmodels.Shadow) ([]target, bool) {
	out := make([]target, 0, len(ps))
	for i, p := range ps {
		rp, ok := p.(replayer)
		if !ok {
			return nil, false
		}
		t := target{name: p.Name(), f: rp.folder()}
		if shadows != nil {
			t.name, t.sh = shadows[i].Name(), shadows[i]
		}
		out = append(out, t)
	}
	return out, true
}

// replay applies the log from the start to its head to every target: it
// reads each batch once, decodes each event once, and writes the batch's
// rows of every target and their checkpoints in one transaction. Every
// target's checkpoint must be at the start. A batch that the targets cannot
// fold (an event that does not decode, a row that will not write) is
// applied by r's workers event by event instead, which retry and park as
// the live path does; r's workers are the targets' projections. It returns
// an error only when ctx ended.
//
// The next batch is read and decoded (readAhead) while one is written, so
// that the database's work on the two and the decoding overlap.
func replay(ctx context.Context, r *Runner, targets []target) error {
	rp := r.rm.NewReplay()
	defer rp.Close()
	readCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	batches, free := make(chan *readBatch), make(chan *readBatch, 2)
	// Made at their size: grown by doubling, they cost as much again.
	free <- &readBatch{evs: make([]event, 0, replayBatch)}
	free <- &readBatch{evs: make([]event, 0, replayBatch)}
	wg.Go(func() { r.readAhead(readCtx, batches, free) })

	var from eventstore.Position
	moves := make([]readmodels.CheckpointMove, len(targets))
	for rb := range batches {
		evs, last := rb.evs, rb.last
		err := rp.Update(ctx, func(b *readmodels.Bulk) error {
			for i, t := range targets {
				tb := b
				if t.sh != nil {
					tb = t.sh.Bulk(b)
				}
				if err := t.f.replay(tb, evs); err != nil {
					return fmt.Errorf("projections: replay %s: %w", t.name, err)
				}
				moves[i] = readmodels.CheckpointMove{Name: t.name, From: from, To: last}
			}
			return b.Tx().AdvanceCheckpoints(moves) // one statement for all
		})
		clear(rb.evs) // let the batch go
		free <- rb
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.log.Warn("projections: rebuild batch applied event by event",
				"position", from.String(), "err", err)
			ps := make([]Projection, len(r.workers))
			for i, w := range r.workers {
				ps[i] = w.proj
			}
			one := NewRunner(until{Source: r.src, last: last}, r.rm, ps, r.opts)
			var wg sync.WaitGroup
			for _, w := range one.workers {
				wg.Go(func() { one.run(ctx, w, true) })
			}
			wg.Wait()
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		from = last
	}
	return ctx.Err()
}

// readBatch is a batch of the log, read and decoded ahead of its write.
type readBatch struct {
	evs  []event
	last eventstore.Position // of the last event
}

// readAhead reads the log from the start to its head in batches of
// replayBatch, decodes them into buffers taken from free, and sends them
// on out, which it closes when it has sent the head or ctx ended. It
// retries a failed read until ctx ends.
func (r *Runner) readAhead(ctx context.Context, out chan<- *readBatch, free <-chan *readBatch) {
	defer close(out)
	var (
		from   eventstore.Position
		outage int
	)
	for {
		var rb *readBatch
		select {
		case rb = <-free:
		case <-ctx.Done():
			return
		}
		recs, err := r.src.ReadAll(ctx, from, replayBatch)
		for err != nil {
			if ctx.Err() != nil {
				return
			}
			outage++
			r.log.Warn("projections: cannot read the log for a rebuild; retrying",
				"position", from.String(), "attempt", outage, "err", err)
			r.sleep(ctx, outage)
			recs, err = r.src.ReadAll(ctx, from, replayBatch)
		}
		outage = 0
		if len(recs) == 0 {
			return
		}
		rb.evs = rb.evs[:0]
		for i := range recs {
			rb.evs = append(rb.evs, decode(&recs[i]))
		}
		rb.last = recs[len(recs)-1].Position
		select {
		case out <- rb:
		case <-ctx.Done():
			return
		}
		if len(recs) < replayBatch {
			return
		}
		from = rb.last
	}
}

// until hides the events after last.
type until struct {
	Source
	last eventstore.Position
}

func (u until) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	evs, err := u.Source.ReadAll(ctx, after, limit)
	for i, ev := range evs {
		if u.last.Less(ev.Position) {
			return evs[:i], err
		}
	}
	return evs, err
}

// shadowed is a projection replayed into its shadow tables: its own name
// (the shadow's checkpoint key), the projection's logic.
type shadowed struct {
	p  Projection
	sh *readmodels.Shadow
}

func (s shadowed) Name() string { return s.sh.Name() }

func (s shadowed) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	return s.p.Apply(s.sh.Tx(tx), ev)
}

// errLeaseLost ends a rebuild whose lease went to another process.
var errLeaseLost = errors.New("projections: rebuild lease lost")

func rebuildShadowed(ctx context.Context, live *Runner, ps []Projection) (err error) {
	rm := live.rm
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	leases, err := rm.Leases(readmodels.LeaseOptions{})
	if err != nil {
		return err
	}
	// In name order, so that two rebuilds of overlapping sets cannot each
	// hold a lease the other waits for.
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.Name())
	}
	slices.Sort(names)
	for _, n := range names {
		le, err := leases.Acquire(ctx, "rebuild "+n)
		if err != nil {
			return fmt.Errorf("projections: rebuild %s: %w", n, err)
		}
		defer le.Release()
		go func() {
			select {
			case <-le.Lost():
				cancel(fmt.Errorf("%w: %s", errLeaseLost, n))
			case <-ctx.Done():
			}
		}()
	}

	shadows := make([]Projection, 0, len(ps))
	defer func() {
		if err == nil {
			return
		}
		// Leave nothing behind; the next rebuild would drop it anyway.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer dcancel()
		for _, s := range shadows {
			_ = s.(shadowed).sh.Drop(dctx)
		}
	}()
	for _, p := range ps {
		sh, err := rm.NewShadow(ctx, p.Name(), p.(Tabled).Tables()...)
		if err != nil {
			return fmt.Errorf("projections: rebuild %s: %w", p.Name(), err)
		}
		shadows = append(shadows, shadowed{p: p, sh: sh})
	}

	// Replay into the shadows; each shadow keeps its own checkpoint.
	r := NewRunner(live.src, rm, shadows, live.opts)
	shs := make([]*readmodels.Shadow, len(shadows))
	for i, s := range shadows {
		shs[i] = s.(shadowed).sh
	}
	if targets, ok := replayTargets(ps, shs); ok {
		// A batched replay looks rows up only through the indexes this
		// keeps; the others are built once, after it (Switch).
		for i, sh := range shs {
			if err := sh.DeferIndexes(ctx); err != nil {
				return fmt.Errorf("projections: rebuild %s: %w", ps[i].Name(), err)
			}
		}
		_ = replay(ctx, r, targets)
	} else {
		var wg sync.WaitGroup
		for _, w := range r.workers {
			wg.Go(func() { r.run(ctx, w, true) })
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	// Build the deferred indexes and analyze every shadow side by side,
	// before the switches, which then only catch up and swap.
	if err := rm.Prepare(ctx, shs...); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("projections: rebuild: %w", err)
	}
	for i, w := range r.workers {
		if err := r.switchIn(ctx, w, shadows[i].(shadowed)); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("projections: rebuild %s: %w", shadows[i].(shadowed).p.Name(), err)
		}
	}
	return nil
}

// switchIn swaps a caught-up shadow in. The few events the live projection
// applied since the replay's last read are applied to the shadow inside the
// switch; when that fails (an event that needs retries, a lock not granted
// in time, the checkpoint moved), the shadow is caught up again outside the
// locks and the switch tried anew.
func (r *Runner) switchIn(ctx context.Context, w *worker, s shadowed) error {
	for attempt := 1; ; attempt++ {
		err := s.sh.Switch(ctx, func(tx *readmodels.Tx, from, live eventstore.Position) (eventstore.Position, error) {
			return r.catchUp(ctx, s.p, tx, from, live)
		})
		if err == nil {
			r.log.Info("projections: rebuilt tables switched in", "projection", s.p.Name())
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, readmodels.ErrShadowGone) || attempt == maxSwitchAttempts {
			return err
		}
		r.log.Warn("projections: cannot switch the rebuilt tables in; catching up and retrying",
			"projection", s.p.Name(), "attempt", attempt, "err", err)
		r.sleep(ctx, attempt)
		r.run(ctx, w, true)
	}
}

// catchUp applies the events after from to p through tx until it has
// applied live or later, and returns the position of the last one applied.
func (r *Runner) catchUp(ctx context.Context, p Projection, tx *readmodels.Tx, from, live eventstore.Position) (eventstore.Position, error) {
	pos := from
	for pos.Less(live) {
		evs, err := r.src.ReadAll(ctx, pos, r.opts.BatchSize)
		if err != nil {
			return pos, err
		}
		if len(evs) == 0 {
			return pos, fmt.Errorf("projections: the log read ends at %s, before the live checkpoint %s", pos, live)
		}
		for _, ev := range evs {
			if err := p.Apply(tx, ev); err != nil {
				return pos, fmt.Errorf("projections: apply %s at %s: %w", ev.Type, ev.Position, err)
			}
		}
		pos = evs[len(evs)-1].Position
	}
	return pos, nil
}
