package projections

import (
	"context"
	"fmt"
	"sync"

	"evident/readmodels"
)

// Rebuild resets the projections ps (their tables, checkpoints and parked
// events) and runs them from the start of the log until a read finds no more
// events, then returns. It appends nothing and runs no reactor, so a replay
// has no side effects. Run it while no Runner drives the same projections.
// Each projection must be Tabled. It returns ctx.Err() when ctx ended first.
func Rebuild(ctx context.Context, src Source, rm *readmodels.Store, ps []Projection) error {
	r := NewRunner(src, rm, ps, Options{})
	if err := r.validate(); err != nil {
		return err
	}
	for _, p := range ps {
		t, ok := p.(Tabled)
		if !ok {
			return fmt.Errorf("projections: rebuild %s: it does not name its tables", p.Name())
		}
		if err := rm.Reset(ctx, p.Name(), t.Tables()...); err != nil {
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
