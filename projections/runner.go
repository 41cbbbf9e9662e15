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
	"slices"
	"strings"
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
	// Leases, when set, make each projection and reactor run in one process
	// at a time among all that share the database: a worker runs only while
	// it holds the lease of its name, and stops at once when the lease is
	// lost. Nil runs everything here, which is right for one process (on
	// SQLite a file lock guarantees it). See StoreLeases.
	Leases Leases
	// ReactorCheckpointEvery is how often at most a reactor's checkpoint is
	// stored while it handles events; in between it moves in memory only,
	// and it is stored when the reactor parks an event and when it stops.
	// Reactors are idempotent, so a crash only replays what they saw since.
	// Default 1s.
	ReactorCheckpointEvery time.Duration
}

// Leases hand out the right to run a projection or reactor (by name) to one
// process at a time.
type Leases interface {
	// Acquire blocks until this process holds the lease called name, or ctx
	// ends (then it returns ctx.Err()). Any other error means the lease
	// could not be tried now; the Runner retries with backoff.
	Acquire(ctx context.Context, name string) (Lease, error)
}

// Lease is a held lease.
type Lease interface {
	// Lost is closed when the lease may have gone to another process.
	Lost() <-chan struct{}
	// Release gives the lease up; calling it twice is harmless.
	Release()
}

// StoreLeases adapts readmodels' PostgreSQL leases (session advisory locks,
// Store.Leases) to Leases.
func StoreLeases(l *readmodels.Leases) Leases { return storeLeases{l} }

type storeLeases struct{ l *readmodels.Leases }

var (
	_ Leases = storeLeases{}
	_ Lease  = (*readmodels.Lease)(nil)
)

func (s storeLeases) Acquire(ctx context.Context, name string) (Lease, error) {
	le, err := s.l.Acquire(ctx, name)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return le, nil
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
	if o.ReactorCheckpointEvery <= 0 {
		o.ReactorCheckpointEvery = time.Second
	}
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
	// Running is true while this process runs the worker: it holds the
	// worker's lease, or there are no leases.
	Running bool `json:"running"`
	// Standby is true while this process waits for the lease another process
	// holds; Position is then the last one this process saw.
	Standby bool `json:"standby"`
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
	standby bool
}

// Runner drives projections and reactors from the log. Build it with
// NewRunner, then call Run once.
type Runner struct {
	src     Source
	feed    *feed
	group   *group // nil unless the projections share transactions (grouped)
	rm      *readmodels.Store
	opts    Options
	log     *slog.Logger
	workers []*worker

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a position moves, or a worker starts or stops here
	wakes   int64         // times changed was closed, for tests
	started bool
}

// NewRunner returns a Runner for the projections ps and opts.Reactors. It
// starts nothing; Run does.
func NewRunner(src Source, rm *readmodels.Store, ps []Projection, opts Options) *Runner {
	opts = opts.withDefaults()
	r := &Runner{src: src, rm: rm, opts: opts, log: opts.Logger, changed: make(chan struct{})}
	r.feed = &feed{src: src, limit: opts.BatchSize, flights: map[eventstore.Position]*flight{},
		keep: 2*(len(ps)+len(opts.Reactors)) + 2}
	if rm.Dialect() == readmodels.DialectPostgres || opts.Leases == nil {
		r.group = &group{wake: make(chan struct{}, 1)}
	}
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
	if r.opts.Leases != nil {
		// Some workers may run elsewhere: hear their checkpoints.
		wg.Go(func() { r.listen(ctx) })
	}
	if r.group != nil {
		wg.Go(func() { r.runGroup(ctx) })
	}
	for _, w := range r.workers {
		wg.Go(func() { r.run(ctx, w, false) })
	}
	wg.Wait()
	return nil
}

// listen keeps the read models' checkpoint listener running until ctx ends.
// While it is down, waiters poll.
func (r *Runner) listen(ctx context.Context) {
	const maxPause = 5 * time.Second
	pause := r.opts.RetryDelay
	for ctx.Err() == nil {
		began := time.Now()
		err := r.rm.Listen(ctx)
		if err == nil {
			return
		}
		if time.Since(began) > maxPause {
			pause = r.opts.RetryDelay // it listened a while: this is a new outage
		}
		r.log.Warn("projections: cannot listen for checkpoints; polling", "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		pause = min(2*pause, maxPause)
	}
}

// WaitFor blocks until every projection (not the reactors) has checkpointed
// pos or later, or ctx ends (then it returns ctx.Err()). It works on every
// instance: a projection that runs in another process (Options.Leases) is
// read from its committed checkpoint, woken by the read models'
// notifications while Run is running. Call it while Run runs.
//
// Reactors are left out on purpose, here and in a Follower's After (which
// may name projections only): a reactor stores its checkpoint lazily
// (Options.ReactorCheckpointEvery), so its stored checkpoint may trail what
// it has handled, and another instance could not wait on it. Projections
// store theirs with every batch, so every instance can.
func (r *Runner) WaitFor(ctx context.Context, pos eventstore.Position) error {
	var names []string
	for _, w := range r.workers {
		if w.kind == KindProjection {
			names = append(names, w.name)
		}
	}
	return r.waitFor(ctx, names, pos)
}

// How often waiters read other processes' checkpoints: every pollInterval
// while no notification can tell them, and every fallbackPoll while one can,
// because the read models send their NOTIFY after the commit, so a crash
// (or a failure) between the two loses it.
const (
	pollInterval = 250 * time.Millisecond
	fallbackPoll = time.Second
)

// waitFor waits until the projections names have checkpointed pos. A
// projection that runs here is read from memory; one that runs in another
// process (leases) from its committed checkpoint, woken by the read models'
// notifications, or every pollInterval while those cannot be heard (and
// every fallbackPoll in any case, for a notification that was lost).
func (r *Runner) waitFor(ctx context.Context, names []string, pos eventstore.Position) error {
	for {
		stored := r.rm.CheckpointsChanged() // before reading, so no change is missed
		r.mu.Lock()
		local := r.changed
		done := true
		var remote []string
		for _, w := range r.workers {
			if w.kind != KindProjection || !contains(names, w.name) {
				continue
			}
			if w.running || r.opts.Leases == nil {
				done = done && !w.pos.Less(pos)
			} else {
				remote = append(remote, w.name)
			}
		}
		r.mu.Unlock()
		interval := time.Duration(0)
		if len(remote) > 0 {
			interval = fallbackPoll
			if !r.rm.Listening() {
				interval = pollInterval
			}
		}
		for _, name := range remote {
			if !done {
				break
			}
			cp, err := r.rm.Checkpoint(ctx, name)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				done, interval = false, pollInterval
				break
			}
			r.seen(name, cp)
			done = !cp.Less(pos)
		}
		if done {
			return nil
		}
		var (
			tick  <-chan time.Time
			timer *time.Timer
		)
		if interval > 0 {
			timer = time.NewTimer(interval)
			tick = timer.C
		}
		if len(remote) == 0 {
			// Every projection waited for runs here: its commits move
			// positions in memory and close local. The read models'
			// channel would only wake this waiter a second time for
			// each of them.
			stored = nil
		}
		select {
		case <-ctx.Done():
		case <-local:
		case <-stored:
		case <-tick:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// seen records the checkpoint of a worker that runs elsewhere, for Status.
func (r *Runner) seen(name string, pos eventstore.Position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		if w.name == name && !w.running && w.pos.Less(pos) {
			w.pos = pos
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
		out = append(out, Status{Name: w.name, Kind: w.kind, Position: w.pos, LastError: w.lastErr, Parked: w.parked,
			Running: w.running, Standby: w.standby})
	}
	return out
}

// advance records that w has checkpointed pos and wakes the waiters.
func (r *Runner) advance(w *worker, pos eventstore.Position, parked int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.pos, w.lastErr = pos, ""
	w.parked += parked
	r.wakeLocked()
}

// advanceParts records the checkpoints a group batch committed and wakes
// the waiters once for all of them, not once per projection: every
// command waiting for its read models would otherwise wake and look
// again as many times.
func (r *Runner) advanceParts(parts []part) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range parts {
		p.m.w.pos, p.m.w.lastErr = p.to, ""
	}
	r.wakeLocked()
}

// wakeLocked wakes the waiters; r.mu is held.
func (r *Runner) wakeLocked() {
	r.wakes++
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Runner) failed(w *worker, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.lastErr = err.Error()
}

// setRunning records whether w runs here, and wakes the waiters: they
// read a worker that runs here from memory, one that runs elsewhere from
// its stored checkpoint.
func (r *Runner) setRunning(w *worker, running bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.running = running
	r.wakeLocked()
}

func (r *Runner) position(w *worker) eventstore.Position {
	r.mu.Lock()
	defer r.mu.Unlock()
	return w.pos
}

func (r *Runner) setStandby(w *worker, standby bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.standby = standby
}

// run drives one worker until ctx ends or, with toHead, until a read
// returns less than a batch. With leases it runs the worker only while it
// holds the worker's lease, and waits for the lease again when it is lost.
func (r *Runner) run(ctx context.Context, w *worker, toHead bool) {
	if r.opts.Leases == nil || toHead {
		for r.term(ctx, w, toHead) {
			r.sleep(ctx, 1)
		}
		return
	}
	defer r.setStandby(w, false)
	for attempt := 1; ctx.Err() == nil; {
		r.setStandby(w, true)
		lease, err := r.opts.Leases.Acquire(ctx, w.name)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Capped low: a standby must not sleep through a failover.
			r.unavailable(ctx, w, "acquire the lease", r.position(w), err, min(attempt, 5))
			attempt++
			continue
		}
		attempt = 1
		r.setStandby(w, false)
		r.log.Info("projections: lease acquired", "projection", w.name)
		held, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lease.Lost():
				cancel() // stop at once: another process may run it now
			case <-held.Done():
			}
		}()
		r.term(held, w, false)
		cancel()
		lease.Release()
		if ctx.Err() == nil {
			r.log.Warn("projections: lease lost or given up; standing by", "projection", w.name)
		}
	}
}

// term runs one term of a worker: load its checkpoint, then project or
// react until ctx ends (or, with toHead, until a read returns less than a
// batch). It reports true when the checkpoint moved under it (another
// process wrote it): the term must end without writing anything more, and a
// new one start from the stored checkpoint.
func (r *Runner) term(ctx context.Context, w *worker, toHead bool) bool {
	r.setRunning(w, true)
	defer r.setRunning(w, false)
	pos, ok := r.start(ctx, w)
	if !ok {
		return false
	}
	// A reactor's checkpoint is stored lazily: saved is what is stored, pos
	// what it has handled (see Options.ReactorCheckpointEvery).
	saved, savedAt := pos, time.Now()
	if w.react != nil {
		defer func() {
			if saved != pos {
				r.saveOnExit(ctx, w, saved, pos)
			}
		}()
	}
	// movedOn reports whether err says the checkpoint moved under the term;
	// then the term stores nothing more, not even on its way out.
	movedOn := func(err error) bool {
		if errors.Is(err, readmodels.ErrCheckpointMoved) {
			saved = pos
			return true
		}
		return false
	}
	var outage int
	// solo is set while a grouped projection works on its own: it starts
	// so, catching up from its checkpoint without holding the group back,
	// and the group lets it go after a failure, to retry (and park) by
	// itself; a short batch says it is at the head, and it joins the group.
	solo := true
	for ctx.Err() == nil {
		if r.group != nil && w.proj != nil && !toHead && !solo {
			var moved bool
			if pos, moved = r.join(ctx, w, pos); moved {
				return true
			}
			if ctx.Err() != nil {
				return false
			}
			solo = true
		}
		var (
			evs []eventstore.RecordedEvent
			err error
		)
		if toHead {
			evs, err = r.src.ReadAll(ctx, pos, r.opts.BatchSize)
		} else {
			rctx, cancel := ctx, context.CancelFunc(func() {})
			if w.react != nil && saved != pos {
				// Store the reactor's checkpoint in time even if the log
				// stays quiet. Only a reactor's: a projection stores its
				// checkpoint with every batch, and saved stays where its
				// term began.
				rctx, cancel = context.WithDeadline(ctx, savedAt.Add(r.opts.ReactorCheckpointEvery))
			}
			evs, err = r.feed.next(rctx, pos)
			due := rctx.Err() != nil
			cancel()
			if due && ctx.Err() == nil {
				if err := r.saveReactor(ctx, w, saved, pos); err != nil {
					return movedOn(err)
				}
				saved, savedAt = pos, time.Now()
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			outage++
			r.unavailable(ctx, w, "read the log", pos, err, outage)
			continue
		}
		outage = 0
		if len(evs) == 0 {
			if toHead {
				return false
			}
			solo = false
			continue // the feed has waited for the log
		}
		if w.proj != nil {
			err = r.project(ctx, w, pos, evs)
		} else {
			saved, err = r.react(ctx, w, saved, evs)
		}
		if movedOn(err) {
			r.failed(w, err)
			r.log.Warn("projections: checkpoint moved by another process; batch abandoned",
				"projection", w.name, "position", pos.String(), "err", err)
			return true
		}
		if err != nil { // ctx ended
			return false
		}
		pos = evs[len(evs)-1].Position
		if w.react != nil && saved != pos && time.Since(savedAt) >= r.opts.ReactorCheckpointEvery {
			if err := r.saveReactor(ctx, w, saved, pos); err != nil {
				return movedOn(err)
			}
			saved, savedAt = pos, time.Now()
		}
		if toHead && len(evs) < r.opts.BatchSize {
			return false // a short read: at the head, or as near as a replay beside appends gets
		}
		if len(evs) < r.opts.BatchSize {
			solo = false // at the head again: back to the group
		}
	}
	return false
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
// rest of the batch follows. from is the checkpoint the batch starts at; a
// checkpoint found elsewhere aborts the batch with ErrCheckpointMoved.
// Otherwise it returns an error only when ctx ended.
func (r *Runner) project(ctx context.Context, w *worker, from eventstore.Position, evs []eventstore.RecordedEvent) error {
	var (
		attempts, outage int
		parkAt           = -1
		parkErr          error
		batched          = true // see applyGroup
	)
	for len(evs) > 0 {
		upto := len(evs)
		if parkAt >= 0 {
			upto = parkAt + 1
		}
		chunk := evs[:upto]
		var err error
		// Derived rows and their checkpoint(s): a crash loses them
		// together and they are applied again.
		update := r.rm.UpdateAsync
		if !batched {
			update = r.rm.Update
		}
		if parkAt < 0 && !handlesAny(w.proj, chunk) {
			// Nothing in the batch for this projection: one statement
			// moves its checkpoint, no transaction.
			err = r.rm.AdvanceCheckpoint(ctx, w.name, from, chunk[len(chunk)-1].Position)
		} else {
			err = update(ctx, func(tx *readmodels.Tx) error {
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
				return tx.AdvanceCheckpoint(w.name, from, chunk[len(chunk)-1].Position)
			})
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *applyError
		switch {
		case errors.Is(err, readmodels.ErrCheckpointMoved):
			return err
		case batched && errors.Is(err, readmodels.ErrBatched) && !transient(err):
			// A write of the batch failed; unbatched, the event that
			// made it is known, to retry and park.
			batched = false
		case err == nil:
			parked := 0
			if parkAt >= 0 {
				parked = 1
				ev := chunk[parkAt]
				r.log.Error("projections: event parked",
					"projection", w.name, "position", ev.Position.String(), "event_type", ev.Type,
					"attempts", attempts, "err", parkErr)
			}
			from = chunk[len(chunk)-1].Position
			r.advance(w, from, parked)
			evs = evs[upto:]
			attempts, outage, parkAt, parkErr, batched = 0, 0, -1, nil, true
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

// react hands each event of a batch to a reactor and moves its position in
// memory; term stores it now and then. saved is the stored checkpoint; a
// parked event is stored together with the checkpoint moved onto it, and
// react returns the stored checkpoint after the batch. It returns
// ErrCheckpointMoved when another process moved the checkpoint, and
// otherwise an error only when ctx ended.
func (r *Runner) react(ctx context.Context, w *worker, saved eventstore.Position, evs []eventstore.RecordedEvent) (eventstore.Position, error) {
	parked := 0
	for _, ev := range evs {
		if len(w.after) > 0 {
			if err := r.waitFor(ctx, w.after, ev.Position); err != nil {
				return saved, err
			}
		}
		attempts, outage := 0, 0
		for {
			herr := w.react.Handle(ctx, ev)
			if herr == nil {
				break
			}
			if ctx.Err() != nil {
				return saved, ctx.Err()
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
					return tx.AdvanceCheckpoint(w.name, saved, ev.Position)
				}); err != nil {
					return saved, err
				}
				saved = ev.Position
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
	r.advance(w, evs[len(evs)-1].Position, parked)
	return saved, nil
}

// saveReactor stores a reactor's checkpoint, moving it from saved to pos,
// retrying while the database fails. It returns ErrCheckpointMoved when
// another process moved it, and otherwise an error only when ctx ended.
func (r *Runner) saveReactor(ctx context.Context, w *worker, saved, pos eventstore.Position) error {
	err := r.write(ctx, w, pos, func(tx *readmodels.Tx) error {
		return tx.AdvanceCheckpoint(w.name, saved, pos)
	})
	if errors.Is(err, readmodels.ErrCheckpointMoved) {
		r.failed(w, err)
		r.log.Warn("projections: checkpoint moved by another process",
			"projection", w.name, "position", pos.String(), "err", err)
	}
	return err
}

// saveOnExit stores a reactor's checkpoint as its term ends (ctx may have
// ended), trying once within a few seconds. If that fails, the next term
// replays from the stored checkpoint, which the reactor's idempotence
// makes harmless; after a lost lease the checkpoint may have moved on, and
// then AdvanceCheckpoint changes nothing.
func (r *Runner) saveOnExit(ctx context.Context, w *worker, saved, pos eventstore.Position) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := r.rm.Update(ctx, func(tx *readmodels.Tx) error {
		return tx.AdvanceCheckpoint(w.name, saved, pos)
	})
	if err != nil {
		r.log.Warn("projections: cannot store the checkpoint on stopping; it will replay from the stored one",
			"projection", w.name, "position", pos.String(), "err", err)
	}
}

// write runs fn in a read-model transaction, retrying without end while the
// database fails. It returns ErrCheckpointMoved as it is, and otherwise an
// error only when ctx ended.
func (r *Runner) write(ctx context.Context, w *worker, pos eventstore.Position, fn func(*readmodels.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := r.rm.Update(ctx, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil || errors.Is(err, readmodels.ErrCheckpointMoved) {
			return err
		}
		r.unavailable(ctx, w, "save the checkpoint", pos, err, attempt)
	}
}

func parkedEvent(name string, ev eventstore.RecordedEvent, err error, attempts int) readmodels.ParkedEvent {
	return readmodels.ParkedEvent{
		Projection: name, Position: ev.Position, EventID: ev.ID.String(), EventType: ev.Type,
		Error: err.Error(), Attempts: attempts, Stream: ev.Stream, Version: ev.Version,
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

// feed shares the reads of the log among a Runner's workers: workers at the
// same position (the usual case: every worker at the head, woken by the same
// append) get one ReadAll between them, and a worker that reaches a position
// shortly after the others gets their batch from a small cache instead of
// reading it again. A worker elsewhere (catching up, or back from a lease)
// reads on its own through the same path, and shares its reads with any
// worker that follows it. Batches are never changed by their readers.
//
// A batch read from p stays right for p forever: the log after p only
// grows at its end (the stores' ReadAll never returns an event before one it
// returned earlier), so a cached short batch is a prefix of what a new read
// would return, and the worker reads the rest from the batch's end.
type feed struct {
	src   Source
	limit int
	keep  int // how many recent batches the cache holds

	mu      sync.Mutex
	cache   []cached // non-empty batches, oldest first
	flights map[eventstore.Position]*flight
}

type cached struct {
	from eventstore.Position
	evs  []eventstore.RecordedEvent
}

// flight is one read of the log in progress, which every worker asking for
// the same position waits for.
type flight struct {
	done chan struct{}
	evs  []eventstore.RecordedEvent
	err  error
	// abandoned is set when the reader's ctx ended: its error is not the
	// others', who read again.
	abandoned bool
}

// next returns up to limit events after pos. When the log has none, it
// waits for the log (Source.Wait, which may return early) and returns no
// events and no error: call it again. It returns the error of the read or
// of the wait, or ctx.Err().
func (f *feed) next(ctx context.Context, pos eventstore.Position) ([]eventstore.RecordedEvent, error) {
	for {
		f.mu.Lock()
		for _, c := range f.cache {
			if c.from == pos {
				f.mu.Unlock()
				return c.evs, nil
			}
		}
		if fl, ok := f.flights[pos]; ok {
			f.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if fl.abandoned {
				continue
			}
			return fl.evs, fl.err
		}
		fl := &flight{done: make(chan struct{})}
		f.flights[pos] = fl
		f.mu.Unlock()

		fl.evs, fl.err = f.read(ctx, pos)
		fl.abandoned = ctx.Err() != nil
		f.mu.Lock()
		delete(f.flights, pos)
		if fl.err == nil && len(fl.evs) > 0 {
			if len(f.cache) >= f.keep {
				f.cache = append(f.cache[:0], f.cache[1:]...)
			}
			f.cache = append(f.cache, cached{from: pos, evs: fl.evs})
		}
		f.mu.Unlock()
		close(fl.done)
		return fl.evs, fl.err
	}
}

// read reads once, and waits for the log when that found nothing. It
// reads before it waits even where the last read found the head: under
// load the next events are there by then, and a Wait first would cost a
// round trip of its own (its probe) before the read.
func (f *feed) read(ctx context.Context, pos eventstore.Position) ([]eventstore.RecordedEvent, error) {
	evs, err := f.src.ReadAll(ctx, pos, f.limit)
	if err != nil || len(evs) > 0 {
		return evs, err
	}
	if err := f.src.Wait(ctx, pos); err != nil {
		return nil, fmt.Errorf("wait for the log: %w", err)
	}
	return nil, nil
}

// group applies each batch to every projection in one read-model
// transaction, each projection still moving its own checkpoint in it
// (compare-and-set, as on its own). On SQLite one write connection would
// otherwise commit (and fsync) once per projection per batch, queueing with
// the appends; on PostgreSQL one transaction per projection per batch costs
// round trips (begin, checkpoint, commit) that the command waiting for its
// read models pays.
//
// With leases only the projections whose lease this process holds are in
// it: a worker joins while it holds its lease and leaves when the lease is
// lost. A batch the group applies for a projection whose lease was lost
// meanwhile commits only if its checkpoint is still where this process
// left it; otherwise that part is let go and the others commit.
//
// A projection catches up on its own (reads and transactions of its own,
// so that a projection being rebuilt does not hold the others back) and
// joins the group with its checkpoint once a short batch says it is at the
// head; it stays while its batches succeed. When its Apply fails, the group
// commits the others without it and lets it go: it then works on its own,
// through the retries and parking of project, until it is back at the head.
type group struct {
	wake chan struct{} // capacity 1: a projection joined

	mu      sync.Mutex
	members []*member
	at      eventstore.Position // where the group reads, while reading
	reading bool
	cancel  context.CancelFunc // ends the group's read, while reading
}

// member is a projection in the group; pos is its checkpoint.
type member struct {
	w   *worker
	pos eventstore.Position // guarded by group.mu
	out chan letGo          // capacity 1
}

// letGo is what a projection the group let go of is told.
type letGo struct {
	pos   eventstore.Position
	moved bool // its checkpoint moved under it (ErrCheckpointMoved)
}

// join hands w, checkpointed at pos, to the group and blocks until the
// group lets it go (then it returns w's checkpoint and whether it moved
// under it) or ctx ends.
func (r *Runner) join(ctx context.Context, w *worker, pos eventstore.Position) (eventstore.Position, bool) {
	g := r.group
	m := &member{w: w, pos: pos, out: make(chan letGo, 1)}
	g.mu.Lock()
	g.members = append(g.members, m)
	if g.reading && pos.Less(g.at) {
		g.cancel() // it waits for events after g.at; this one needs earlier ones
	}
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	select {
	case l := <-m.out:
		return l.pos, l.moved
	case <-ctx.Done():
		g.mu.Lock()
		g.members = slices.DeleteFunc(g.members, func(o *member) bool { return o == m })
		g.mu.Unlock()
		return pos, false
	}
}

// letGo takes m out of the group and tells its worker.
func (g *group) letGo(m *member, moved bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members = slices.DeleteFunc(g.members, func(o *member) bool { return o == m })
	m.out <- letGo{pos: m.pos, moved: moved}
}

// runGroup reads the log for the group's projections, from the lowest of
// their checkpoints, and applies each batch, until ctx ends.
func (r *Runner) runGroup(ctx context.Context) {
	g := r.group
	var outage int
	for ctx.Err() == nil {
		g.mu.Lock()
		if len(g.members) == 0 {
			g.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-g.wake:
			}
			continue
		}
		at := g.members[0].pos
		for _, m := range g.members[1:] {
			if m.pos.Less(at) {
				at = m.pos
			}
		}
		rctx, cancel := context.WithCancel(ctx)
		g.at, g.reading, g.cancel = at, true, cancel
		g.mu.Unlock()
		evs, err := r.feed.next(rctx, at)
		g.mu.Lock()
		g.reading = false
		g.mu.Unlock()
		joined := rctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case joined:
			continue // a projection joined behind at: read from it
		case err != nil:
			outage++
			r.groupUnavailable(ctx, "read the log", at, err, outage)
			continue
		}
		outage = 0
		if len(evs) > 0 {
			r.applyGroup(ctx, at, evs)
		}
	}
}

// part is one projection's share of a group batch.
type part struct {
	m        *member
	from, to eventstore.Position
	evs      []eventstore.RecordedEvent
}

// partError is the failure of parts of a group transaction (indexes in
// increasing order).
type partError struct {
	parts []int
	err   error
}

func (e *partError) Error() string { return e.err.Error() }
func (e *partError) Unwrap() error { return e.err }

// applyGroup applies evs, read from at, to every member whose checkpoint
// they pass, in one transaction. A member that fails is let go and the rest
// are committed without it; a failure of the database is retried without
// end.
func (r *Runner) applyGroup(ctx context.Context, at eventstore.Position, evs []eventstore.RecordedEvent) {
	g := r.group
	var parts []part
	g.mu.Lock()
	for _, m := range g.members {
		if m.pos.Less(at) {
			continue // joined during the read; the next batch starts at it
		}
		i := 0
		for i < len(evs) && !m.pos.Less(evs[i].Position) {
			i++
		}
		if i < len(evs) {
			parts = append(parts, part{m: m, from: m.pos, to: evs[len(evs)-1].Position, evs: evs[i:]})
		}
	}
	g.mu.Unlock()
	// In name order, so that every process locks the checkpoint rows alike.
	slices.SortFunc(parts, func(a, b part) int { return strings.Compare(a.m.w.name, b.m.w.name) })
	// Members that failed are let go together once the others have
	// committed, so that none of them starts its own retries later than
	// another only for having been found out later.
	type failure struct {
		m     *member
		moved bool
	}
	var failed []failure
	defer func() {
		for _, f := range failed {
			g.letGo(f.m, f.moved)
		}
	}()
	var outage int
	// Batched: the transaction's statements go as one round trip. When a
	// write fails there, which part it was is not known; the batch is
	// applied again unbatched, which says.
	batched := true
	for len(parts) > 0 {
		// Derived rows and their checkpoints: a crash loses them together
		// and they are applied again.
		update := r.rm.UpdateAsync
		if !batched {
			update = r.rm.Update
		}
		err := update(ctx, func(tx *readmodels.Tx) error {
			// The checkpoints first, all in one statement: a part whose
			// checkpoint moved (another process runs it now) is found
			// before any row is written, and two processes that apply the
			// same batch queue on the checkpoint rows, not on each other's
			// rows.
			moves := make([]readmodels.CheckpointMove, len(parts))
			for i, p := range parts {
				moves[i] = readmodels.CheckpointMove{Name: p.m.w.name, From: p.from, To: p.to}
			}
			if err := tx.AdvanceCheckpoints(moves); err != nil {
				var me *readmodels.CheckpointsMovedError
				if !errors.As(err, &me) {
					return err
				}
				pe := &partError{err: err}
				for i, p := range parts {
					if slices.Contains(me.Names, p.m.w.name) {
						pe.parts = append(pe.parts, i)
					}
				}
				return pe
			}
			for i, p := range parts {
				for j, ev := range p.evs {
					if err := p.m.w.proj.Apply(tx, ev); err != nil {
						return &partError{parts: []int{i}, err: &applyError{index: j, err: err}}
					}
				}
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		var (
			pe *partError
			me *readmodels.CheckpointsMovedError
		)
		if !errors.As(err, &pe) && errors.As(err, &me) {
			// Found at the commit of a batch.
			pe = &partError{err: err}
			for i, p := range parts {
				if slices.Contains(me.Names, p.m.w.name) {
					pe.parts = append(pe.parts, i)
				}
			}
			err = pe
		}
		switch {
		case batched && errors.Is(err, readmodels.ErrBatched) && !transient(err):
			batched = false
		case err == nil:
			g.mu.Lock()
			for _, p := range parts {
				p.m.pos = p.to
			}
			g.mu.Unlock()
			r.advanceParts(parts)
			return
		case errors.As(err, &pe) && (errors.Is(pe.err, readmodels.ErrCheckpointMoved) || !transient(pe.err)):
			// The projection failed, not the database: the others go on
			// without it, and it retries (and parks) on its own.
			for k := len(pe.parts) - 1; k >= 0; k-- {
				p := parts[pe.parts[k]]
				parts = slices.Delete(parts, pe.parts[k], pe.parts[k]+1)
				r.failed(p.m.w, pe.err)
				r.log.Warn("projections: apply failed in the shared transaction; retrying on its own",
					"projection", p.m.w.name, "position", p.from.String(), "err", pe.err)
				failed = append(failed, failure{p.m, errors.Is(pe.err, readmodels.ErrCheckpointMoved)})
			}
		default:
			outage++
			r.groupUnavailable(ctx, "write the read models", parts[0].evs[0].Position, err, outage)
		}
	}
}

// groupUnavailable is unavailable for the whole group.
func (r *Runner) groupUnavailable(ctx context.Context, what string, pos eventstore.Position, err error, attempt int) {
	g := r.group
	g.mu.Lock()
	for _, m := range g.members {
		r.failed(m.w, err)
	}
	g.mu.Unlock()
	r.log.Warn("projections: cannot "+what+"; retrying",
		"projection", "(all)", "position", pos.String(), "attempt", attempt, "err", err)
	r.sleep(ctx, attempt)
}
