package projections

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"evident/eventstore"
	"evident/readmodels"
)

// Source is the part of the event store the Runner reads.
type Source interface {
	// ReadAll returns up to limit events strictly after position after, in log order.
	ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error)
	// Wait returns when events after position after may be readable; it may return early.
	Wait(ctx context.Context, after eventstore.Position) error
}

// Reactor is a process manager: it turns events into commands. Handle is
// called for every event at least once, in log order, outside any read-model
// transaction (its commands append to the event store, which on SQLite
// shares the one write connection). It must be idempotent. An error that
// wraps eventstore.ErrUnavailable is retried without end; any other is
// retried MaxRetries times and then the event is parked.
type Reactor interface {
	Name() string
	Handle(ctx context.Context, ev eventstore.RecordedEvent) error
}

// Follower is a Reactor that needs projections (by name) to have processed
// an event before it handles it, e.g. because it queries their tables.
type Follower interface {
	After() []string
}

// Options tune a Runner; the zero value works.
type Options struct {
	// BatchSize is how many events one transaction applies. Default 500.
	BatchSize int
	// MaxRetries is how often a failing event is retried before it is parked. Default 5.
	MaxRetries int
	// RetryDelay is the first backoff; it doubles per attempt, with jitter. Default 100ms.
	RetryDelay time.Duration
	// MaxRetryDelay caps the backoff, also while the database is unavailable. Default 30s.
	MaxRetryDelay time.Duration
	// Logger receives retries and parked events. Default slog.Default().
	Logger *slog.Logger
	// Reactors run beside the projections, each from its own checkpoint.
	Reactors []Reactor
}

func (o Options) withDefaults() Options {
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 5
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 100 * time.Millisecond
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = 30 * time.Second
	}
	o.MaxRetryDelay = max(o.MaxRetryDelay, o.RetryDelay)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Kinds of a Status.
const (
	KindProjection = "projection"
	KindReactor    = "reactor"
)

// Status is how one projection or reactor is doing.
type Status struct {
	Name     string              `json:"name"`
	Kind     string              `json:"kind"`
	Position eventstore.Position `json:"position"`
	// LastError is the error of the latest attempt; empty once an attempt succeeds.
	LastError string `json:"last_error,omitempty"`
	Parked    int    `json:"parked"`
	Running   bool   `json:"running"`
}

type worker struct {
	name  string
	kind  string
	proj  Projection
	react Reactor
	after []string

	// guarded by Runner.mu
	pos     eventstore.Position
	lastErr string
	parked  int
	running bool
}

// Runner drives projections and reactors from the log. Build it with
// NewRunner, then call Run once.
type Runner struct {
	src     Source
	rm      *readmodels.Store
	opts    Options
	log     *slog.Logger
	workers []*worker

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a position moves
	started bool
}

// NewRunner returns a Runner for the projections ps and opts.Reactors. It
// starts nothing; Run does.
func NewRunner(src Source, rm *readmodels.Store, ps []Projection, opts Options) *Runner {
	opts = opts.withDefaults()
	r := &Runner{src: src, rm: rm, opts: opts, log: opts.Logger, changed: make(chan struct{})}
	for _, p := range ps {
		r.workers = append(r.workers, &worker{name: p.Name(), kind: KindProjection, proj: p})
	}
	for _, re := range opts.Reactors {
		w := &worker{name: re.Name(), kind: KindReactor, react: re}
		if f, ok := re.(Follower); ok {
			w.after = f.After()
		}
		r.workers = append(r.workers, w)
	}
	return r
}

func (r *Runner) validate() error {
	kinds := map[string]string{}
	var errs []error
	for _, w := range r.workers {
		if w.name == "" {
			errs = append(errs, fmt.Errorf("projections: a %s has no name", w.kind))
		}
		if _, dup := kinds[w.name]; dup {
			errs = append(errs, fmt.Errorf("projections: %q is registered twice (names are checkpoint keys)", w.name))
		}
		kinds[w.name] = w.kind
	}
	for _, w := range r.workers {
		for _, a := range w.after {
			if kinds[a] != KindProjection {
				errs = append(errs, fmt.Errorf("projections: reactor %q follows %q, which is not a projection of this runner", w.name, a))
			}
		}
	}
	return errors.Join(errs...)
}

// Run drives every projection and reactor in its own goroutine until ctx
// ends, then returns nil. It returns an error at once when the set is
// misconfigured (duplicate names, a reactor following an unknown
// projection) or when Run was called before.
func (r *Runner) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.started {
		r.mu.Unlock()
		return errors.New("projections: Run called twice")
	}
	r.started = true
	r.mu.Unlock()
	if err := r.validate(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { r.run(ctx, w, false) })
	}
	wg.Wait()
	return nil
}

// WaitFor blocks until every projection (not the reactors) has checkpointed
// pos or later, or ctx ends (then it returns ctx.Err()).
func (r *Runner) WaitFor(ctx context.Context, pos eventstore.Position) error {
	var names []string
	for _, w := range r.workers {
		if w.kind == KindProjection {
			names = append(names, w.name)
		}
	}
	return r.waitFor(ctx, names, pos)
}

func (r *Runner) waitFor(ctx context.Context, names []string, pos eventstore.Position) error {
	for {
		r.mu.Lock()
		done := true
		for _, w := range r.workers {
			if w.kind == KindProjection && contains(names, w.name) && w.pos.Less(pos) {
				done = false
				break
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Status reports every projection and reactor, projections first.
func (r *Runner) Status() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.workers))
	for _, w := range r.workers {
		out = append(out, Status{Name: w.name, Kind: w.kind, Position: w.pos, LastError: w.lastErr, Parked: w.parked, Running: w.running})
	}
	return out
}

// advance records that w has checkpointed pos and wakes the waiters.
func (r *Runner) advance(w *worker, pos eventstore.Position, parked int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.pos, w.lastErr = pos, ""
	w.parked += parked
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Runner) failed(w *worker, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.lastErr = err.Error()
}

func (r *Runner) setRunning(w *worker, running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.running = running
}

// run drives one worker until ctx ends or, with toHead, until a read finds
// no more events.
func (r *Runner) run(ctx context.Context, w *worker, toHead bool) {
	r.setRunning(w, true)
	defer r.setRunning(w, false)
	pos, ok := r.start(ctx, w)
	if !ok {
		return
	}
	var outage int
	for ctx.Err() == nil {
		evs, err := r.src.ReadAll(ctx, pos, r.opts.BatchSize)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			outage++
			r.unavailable(ctx, w, "read the log", pos, err, outage)
			continue
		}
		outage = 0
		if len(evs) == 0 {
			if toHead {
				return
			}
			if err := r.src.Wait(ctx, pos); err != nil && ctx.Err() == nil {
				outage++
				r.unavailable(ctx, w, "wait for the log", pos, err, outage)
			}
			continue
		}
		if w.proj != nil {
			err = r.project(ctx, w, evs)
		} else {
			err = r.react(ctx, w, evs)
		}
		if err != nil { // ctx ended
			return
		}
		pos = evs[len(evs)-1].Position
	}
}

// start loads w's checkpoint and parked count, retrying while the database
// is unavailable. It reports false when ctx ended first.
func (r *Runner) start(ctx context.Context, w *worker) (eventstore.Position, bool) {
	for attempt := 1; ; attempt++ {
		pos, err := r.rm.Checkpoint(ctx, w.name)
		var parked []readmodels.ParkedEvent
		if err == nil {
			parked, err = r.rm.Parked(ctx)
		}
		if err == nil {
			n := 0
			for _, p := range parked {
				if p.Projection == w.name {
					n++
				}
			}
			r.mu.Lock()
			w.parked = n
			r.mu.Unlock()
			r.advance(w, pos, 0)
			return pos, true
		}
		if ctx.Err() != nil {
			return pos, false
		}
		r.unavailable(ctx, w, "load the checkpoint", pos, err, attempt)
		if ctx.Err() != nil {
			return pos, false
		}
	}
}

// unavailable logs a failure of the database or the log (not of an event)
// and sleeps the capped backoff. Such failures never park anything.
func (r *Runner) unavailable(ctx context.Context, w *worker, what string, pos eventstore.Position, err error, attempt int) {
	r.failed(w, err)
	r.log.Warn("projections: cannot "+what+"; retrying",
		"projection", w.name, "position", pos.String(), "attempt", attempt, "err", err)
	r.sleep(ctx, attempt)
}

// sleep waits the backoff of the given attempt: RetryDelay doubled per
// attempt, capped at MaxRetryDelay, with jitter so that workers that failed
// together do not retry together.
func (r *Runner) sleep(ctx context.Context, attempt int) {
	d := r.opts.RetryDelay
	for i := 1; i < attempt && d < r.opts.MaxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxRetryDelay)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// applyError is an event a projection's Apply refused.
type applyError struct {
	index int
	err   error
}

func (e *applyError) Error() string { return e.err.Error() }
func (e *applyError) Unwrap() error { return e.err }

// project applies a batch and moves the checkpoint in one transaction. When
// an event fails, the batch is retried with backoff; once that event has
// failed more than MaxRetries times, the events before it are applied, it is
// parked and the checkpoint moves onto it, all in one transaction, and the
// rest of the batch follows. It returns an error only when ctx ended.
func (r *Runner) project(ctx context.Context, w *worker, evs []eventstore.RecordedEvent) error {
	var (
		attempts, outage int
		parkAt           = -1
		parkErr          error
	)
	for len(evs) > 0 {
		upto := len(evs)
		if parkAt >= 0 {
			upto = parkAt + 1
		}
		chunk := evs[:upto]
		err := r.rm.Update(ctx, func(tx *readmodels.Tx) error {
			for i, ev := range chunk {
				if i == parkAt {
					if err := tx.Park(parkedEvent(w.name, ev, parkErr, attempts)); err != nil {
						return err
					}
					continue
				}
				if err := w.proj.Apply(tx, ev); err != nil {
					return &applyError{index: i, err: err}
				}
			}
			return tx.SetCheckpoint(w.name, chunk[len(chunk)-1].Position)
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *applyError
		switch {
		case err == nil:
			parked := 0
			if parkAt >= 0 {
				parked = 1
				ev := chunk[parkAt]
				r.log.Error("projections: event parked",
					"projection", w.name, "position", ev.Position.String(), "event_type", ev.Type,
					"attempts", attempts, "err", parkErr)
			}
			r.advance(w, chunk[len(chunk)-1].Position, parked)
			evs = evs[upto:]
			attempts, outage, parkAt, parkErr = 0, 0, -1, nil
		case errors.As(err, &ae) && !transient(ae.err):
			attempts++
			ev := chunk[ae.index]
			r.failed(w, err)
			if attempts > r.opts.MaxRetries {
				parkAt, parkErr = ae.index, ae.err
				continue
			}
			r.log.Warn("projections: apply failed; retrying",
				"projection", w.name, "position", ev.Position.String(), "event_type", ev.Type,
				"attempt", attempts, "err", ae.err)
			r.sleep(ctx, attempts)
		default:
			// Begin, commit, checkpoint or a lost connection: the database,
			// not the event. Retry without end.
			outage++
			r.unavailable(ctx, w, "write the read model", chunk[0].Position, err, outage)
		}
	}
	return nil
}

// react hands each event of a batch to a reactor, then saves its checkpoint.
// It returns an error only when ctx ended.
func (r *Runner) react(ctx context.Context, w *worker, evs []eventstore.RecordedEvent) error {
	parked := 0
	for _, ev := range evs {
		if len(w.after) > 0 {
			if err := r.waitFor(ctx, w.after, ev.Position); err != nil {
				return err
			}
		}
		attempts, outage := 0, 0
		for {
			herr := w.react.Handle(ctx, ev)
			if herr == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.failed(w, herr)
			if transient(herr) {
				outage++
				r.unavailable(ctx, w, "handle an event", ev.Position, herr, outage)
				continue
			}
			attempts++
			if attempts > r.opts.MaxRetries {
				// Park it and move the checkpoint onto it together, so that a
				// restart neither loses nor repeats the parking.
				pe := parkedEvent(w.name, ev, herr, attempts)
				if err := r.write(ctx, w, ev.Position, func(tx *readmodels.Tx) error {
					if err := tx.Park(pe); err != nil {
						return err
					}
					return tx.SetCheckpoint(w.name, ev.Position)
				}); err != nil {
					return err
				}
				r.log.Error("projections: event parked",
					"projection", w.name, "position", ev.Position.String(), "event_type", ev.Type,
					"attempts", attempts, "err", herr)
				parked++
				break
			}
			r.log.Warn("projections: reactor failed; retrying",
				"projection", w.name, "position", ev.Position.String(), "event_type", ev.Type,
				"attempt", attempts, "err", herr)
			r.sleep(ctx, attempts)
		}
	}
	// One checkpoint per batch: a crash repeats at most a batch, and
	// reactors are idempotent.
	last := evs[len(evs)-1].Position
	if err := r.write(ctx, w, last, func(tx *readmodels.Tx) error {
		return tx.SetCheckpoint(w.name, last)
	}); err != nil {
		return err
	}
	r.advance(w, last, parked)
	return nil
}

// write runs fn in a read-model transaction, retrying without end while the
// database fails. It returns an error only when ctx ended.
func (r *Runner) write(ctx context.Context, w *worker, pos eventstore.Position, fn func(*readmodels.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := r.rm.Update(ctx, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			return nil
		}
		r.unavailable(ctx, w, "save the checkpoint", pos, err, attempt)
	}
}

func parkedEvent(name string, ev eventstore.RecordedEvent, err error, attempts int) readmodels.ParkedEvent {
	return readmodels.ParkedEvent{
		Projection: name, Position: ev.Position, EventID: ev.ID.String(), EventType: ev.Type,
		Error: err.Error(), Attempts: attempts,
	}
}

// transient reports whether err says the database or the store could not be
// reached, rather than that the event could not be handled: such errors are
// retried without end and never park an event.
func transient(err error) bool {
	var netErr net.Error
	return errors.Is(err, readmodels.ErrUnavailable) || // also every begin/commit failure
		errors.As(err, &netErr) ||
		errors.Is(err, eventstore.ErrUnavailable) ||
		errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, context.DeadlineExceeded)
}
