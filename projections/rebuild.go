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
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { r.run(ctx, w, true) })
	}
	wg.Wait()
	return ctx.Err()
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

	// Replay into the shadows with the Runner's batching, retries and
	// parking; each shadow keeps its own checkpoint.
	r := NewRunner(live.src, rm, shadows, live.opts)
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { r.run(ctx, w, true) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
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
