package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"evident/commands"
)

// scenarioLag measures how long after a command is acknowledged its effect
// is visible in every read model (projections.Runner.WaitFor returns once
// each projection committed a checkpoint at or past the command's position,
// in the same transaction as its rows), with commands arriving at half the
// rate the system sustains.
func scenarioLag(ctx context.Context, p profile, w where, backend string, logf logger) []row {
	section := backend + " live projections"
	var p50s, p99s, rates []measure
	for r := range p.rounds {
		m50, m99, rate := lagOnce(ctx, p, w, backend)
		logf("  %-44s round %d lag p50 %s p99 %s ms at %s cmd/s", section, r+1, num(m50.Value), num(m99.Value), num(rate.Value))
		if m99.Err != nil {
			logf("    error: %v", m99.Err)
		}
		p50s, p99s, rates = append(p50s, m50), append(p99s, m99), append(rates, rate)
	}
	return []row{
		{
			ID: backend + "/lag99", Section: section, LowerBetter: true,
			Name:    "live projection lag, command acknowledged → row visible, at 50 % of peak command rate (p99)",
			Unit:    "ms",
			Evident: p99s, Target: target{Text: "p99 ≤ 20 ms", Max: 20},
			Notes: []string{"p50 " + cell(p50s) + " ms", "offered load " + cell(rates) + " commands/s (register user, via commands.Handler)"},
		},
	}
}

func lagOnce(ctx context.Context, p profile, w where, backend string) (p50, p99, rate measure) {
	a, err := openApp(ctx, w, backend, 24)
	if err != nil {
		return measure{Err: err}, measure{Err: err}, measure{Err: err}
	}
	defer a.Close()
	if err := a.start(false); err != nil {
		return measure{Err: err}, measure{Err: err}, measure{Err: err}
	}
	seq := atomic.Int64{}
	register := func(ctx context.Context) (commands.Result, error) {
		n := seq.Add(1)
		return a.cmd.Register(ctx, commands.Meta{ActorID: commands.Anonymous},
			commands.RegisterInput{Email: fmt.Sprintf("lag-%d@example.com", n), Name: fmt.Sprintf("Lag %d", n)})
	}
	// Peak: 8 callers back to back, projections running beside them.
	peak, c := drive(ctx, 8, min(p.lagDur/2, 2*time.Second), func(ctx context.Context, _ int, _ *rand.Rand, c *counters) {
		if _, err := register(ctx); err != nil {
			c.fail(err)
			return
		}
		c.ops.Add(1)
	})
	if peak == 0 {
		err := fmt.Errorf("no command succeeded: %v", c.firstErr)
		return measure{Err: err}, measure{Err: err}, measure{Err: err}
	}
	// Let the projections catch up with the burst before measuring.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res, err := register(wctx)
	if err == nil {
		err = a.runner.WaitFor(wctx, res.Position)
	}
	cancel()
	if err != nil {
		return measure{Err: err}, measure{Err: err}, measure{Err: err}
	}

	offered := peak / 2
	interval := time.Duration(float64(time.Second) / offered)
	var (
		mu   sync.Mutex
		lags []time.Duration
		errs atomic.Int64
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, 256)
	start := time.Now()
	for i := 0; ; i++ {
		next := start.Add(time.Duration(i) * interval)
		if next.Sub(start) >= p.lagDur || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(next))
		select {
		case sem <- struct{}{}:
		default:
			errs.Add(1) // more than 256 in flight: the system is not keeping up
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := register(ctx)
			if err != nil {
				errs.Add(1)
				return
			}
			acked := time.Now()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = a.runner.WaitFor(wctx, res.Position)
			cancel()
			if err != nil {
				errs.Add(1)
				return
			}
			d := time.Since(acked)
			mu.Lock()
			lags = append(lags, d)
			mu.Unlock()
		})
	}
	wg.Wait()
	note := ""
	if n := errs.Load(); n > 0 {
		note = fmt.Sprintf("%d commands failed or timed out", n)
	}
	return measure{Value: percentileMs(lags, 50)}, measure{Value: percentileMs(lags, 99), Note: note, Errors: errs.Load()}, measure{Value: offered}
}
