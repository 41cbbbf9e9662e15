package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// measure is one run of one system in one scenario.
type measure struct {
	Value   float64 // in the scenario's unit
	Retries int64
	Busy    int64 // SQLITE_BUSY / SQLITE_LOCKED seen
	Errors  int64 // unexpected errors
	Dups    int64 // duplicate or missing versions found afterwards
	Note    string
	Err     error // the run could not be measured

	firstErr error
}

// currentPG is the server of this run, for waiting out restarts.
var currentPG *pgServer

// counters are what writers report while a run lasts.
type counters struct {
	ops, retries, busy, errs atomic.Int64
	mu                       sync.Mutex
	firstErr                 error
}

func (c *counters) fail(err error) {
	c.errs.Add(1)
	if isBusy(err) {
		c.busy.Add(1)
	}
	c.mu.Lock()
	if c.firstErr == nil {
		c.firstErr = err
	}
	c.mu.Unlock()
}

// drive runs op on writers goroutines until d has passed, and returns the
// rate of counted operations per second over the time until every writer
// stopped (in-flight operations finish and count).
func drive(ctx context.Context, writers int, d time.Duration, op func(ctx context.Context, w int, rng *rand.Rand, c *counters)) (float64, *counters) {
	c := &counters{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	start := time.Now()
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w)+1, uint64(start.UnixNano())))
			for !stop.Load() && ctx.Err() == nil {
				op(ctx, w, rng, c)
				// A store that fails fast must not spin the machine.
				if c.errs.Load() > 1000 {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	return float64(c.ops.Load()) / el.Seconds(), c
}

func (c *counters) measure(rate float64) measure {
	m := measure{Value: rate, Retries: c.retries.Load(), Busy: c.busy.Load(), Errors: c.errs.Load(), firstErr: c.firstErr}
	if c.firstErr != nil {
		m.Note = "first error: " + trim(c.firstErr.Error(), 160)
	}
	if c.ops.Load() == 0 && c.firstErr != nil {
		m.Err = c.firstErr
	}
	return m
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// contender is one system's part in a scenario: run measures one round on
// a fresh database.
type contender struct {
	name string
	role string // roleEvident, roleRaw or rolePeer
	run  func(ctx context.Context) measure
}

const (
	roleEvident = "evident"
	roleRaw     = "raw"
	rolePeer    = "peer"
	roleDiag    = "diag"
)

// interleave runs every contender once per round, rotating the order each
// round (A B C, B C A, C A B, …) so that no system always runs first or
// right after another's cleanup.
//
// A run that failed because PostgreSQL went away (other work on a shared
// machine restarts it) is repeated once the server is back, at most twice.
func interleave(ctx context.Context, label string, rounds int, cs []contender, logf func(string, ...any)) map[string][]measure {
	out := make(map[string][]measure, len(cs))
	for r := range rounds {
		for i := range cs {
			c := cs[(i+r)%len(cs)]
			if ctx.Err() != nil {
				out[c.name] = append(out[c.name], measure{Err: ctx.Err()})
				continue
			}
			t := time.Now()
			var m measure
			for attempt := 0; ; attempt++ {
				before := ""
				if currentPG != nil {
					before = currentPG.startTime(ctx)
				}
				m = func() (m measure) {
					defer func() {
						if p := recover(); p != nil {
							m = measure{Err: fmt.Errorf("panic: %v", p)}
						}
					}()
					return c.run(ctx)
				}()
				if currentPG == nil || attempt >= 2 {
					break
				}
				restarted := before == "down" || currentPG.startTime(ctx) != before
				if !restarted && !outage(m.Err) && !(m.Errors > 0 && outage(m.firstErr)) {
					break
				}
				logf("  %s: PostgreSQL went away; waiting for it and repeating the run", label)
				if !currentPG.waitReady(ctx) {
					break
				}
			}
			out[c.name] = append(out[c.name], m)
			status := fmt.Sprintf("%.1f", m.Value)
			if m.Err != nil {
				status = "ERROR " + trim(m.Err.Error(), 200)
			}
			logf("  %-44s round %d %-22s %s (%s)", label, r+1, c.name, status, time.Since(t).Round(10*time.Millisecond))
		}
	}
	return out
}

var errSkipped = errors.New("skipped")
