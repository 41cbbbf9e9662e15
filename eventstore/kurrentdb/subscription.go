package kurrentdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"evident/eventstore"
)

// The seam between the catch-up logic below (ReadAll, Wait, Subscribe) and
// the client: a source opens a filtered catch-up subscription to $all, and a
// subscription hands over what the server sends. Tests put a scripted source
// here to drive drops, duplicates and silences that a live server produces
// only by accident.
type (
	source interface {
		// subscribe opens a subscription to $all that delivers the
		// selected events after after (and perhaps the one at after).
		subscribe(ctx context.Context, after eventstore.Position) (subscription, error)
	}
	subscription interface {
		// messages delivers what the server sends, in order. A message
		// with err set is the last: the subscription dropped.
		messages() <-chan message
		// close ends the subscription; it may be called more than once.
		close()
	}
	message struct {
		event      *eventstore.RecordedEvent
		checkpoint bool  // the server is scanning past events the filter drops
		caughtUp   bool  // the server has sent everything up to its head
		err        error // the subscription dropped, for this reason
	}
)

// errNoMessages is what a subscription that ends without saying why is
// taken for: a drop, never the end of the log.
var errNoMessages = fmt.Errorf("kurrentdb eventstore: subscription ended without a reason: %w", eventstore.ErrUnavailable)

// catchUp reads up to limit selected events strictly after after: ReadAll.
// It ends early, which is always safe (the caller reads on from its last
// event), when the server says it has caught up or when nothing arrives for
// idle. A drop is returned as an error, never taken for the end of the log.
func catchUp(ctx context.Context, src source, keep filter, after eventstore.Position, limit int, idle time.Duration) ([]eventstore.RecordedEvent, error) {
	sub, err := src.subscribe(ctx, after)
	if err != nil {
		return nil, err
	}
	defer sub.close()

	timer := time.NewTimer(idle)
	defer timer.Stop()
	var out []eventstore.RecordedEvent
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return out, nil
		case m, ok := <-sub.messages():
			switch {
			case !ok:
				return nil, errNoMessages
			case m.err != nil:
				return nil, m.err
			case m.caughtUp:
				return out, nil
			case m.event != nil && after.Less(m.event.Position):
				after = m.event.Position
				if !keep.keep(m.event.Stream, m.event.Type) {
					break
				}
				out = append(out, *m.event)
				if len(out) == limit {
					return out, nil
				}
			}
			timer.Reset(idle)
		}
	}
}

// errFound ends waitFor's delivery once the awaited event is there.
var errFound = errors.New("found")

// waitFor returns nil as soon as a selected event after after arrives, the
// subscription's error if it drops first, or ctx's when ctx ends.
func waitFor(ctx context.Context, src source, keep filter, after eventstore.Position) error {
	sub, err := src.subscribe(ctx, after)
	if err != nil {
		return err
	}
	defer sub.close()
	_, _, err = deliver(ctx, sub, keep, after, func(context.Context, eventstore.RecordedEvent) error { return errFound })
	var herr handlerError
	if errors.As(err, &herr) && herr.err == errFound {
		return nil
	}
	return err
}

// handlerError marks an error of the caller's handler, which ends follow
// at once and is returned as it was.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }
func (e handlerError) Unwrap() error { return e.err }

// deliver passes each selected event after after to handle, in order, until
// the subscription drops, handle fails or ctx ends. It returns the position
// it got to and whether anything but the drop arrived: a subscription that
// drops at once has not shown that the server is back.
func deliver(ctx context.Context, sub subscription, keep filter, after eventstore.Position,
	handle func(context.Context, eventstore.RecordedEvent) error) (eventstore.Position, bool, error) {
	heard := false
	for {
		select {
		case <-ctx.Done():
			return after, heard, ctx.Err()
		case m, ok := <-sub.messages():
			if !ok {
				return after, heard, errNoMessages
			}
			if m.err != nil {
				return after, heard, m.err
			}
			heard = true
			// An event at or before after is one a resubscription sent
			// again (or the start position itself): its effect happened.
			if m.event == nil || !after.Less(m.event.Position) {
				continue
			}
			if keep.keep(m.event.Stream, m.event.Type) {
				if err := handle(ctx, *m.event); err != nil {
					return after, heard, handlerError{err}
				}
			}
			after = m.event.Position
		}
	}
}

// backoff spaces resubscriptions: min doubled per failed attempt up to max,
// each delay drawn from its upper half so that instances do not retry in step.
type backoff struct {
	min, max time.Duration
}

var defaultBackoff = backoff{min: 100 * time.Millisecond, max: 10 * time.Second}

func (b backoff) delay(attempt int) time.Duration {
	d := b.min
	for i := 1; i < attempt && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if half := d / 2; half > 0 {
		return half + rand.N(half+1)
	}
	return d
}

// follow is Subscribe: it delivers every selected event after after to
// handle, once each and in log order, resubscribing with backoff from the
// last delivered event whenever the subscription drops or cannot be opened
// for a reason that may pass (eventstore.ErrUnavailable). Attempts count
// from the last subscription that delivered anything. It returns handle's
// error as it was, ctx's error when ctx ends, and any other failure.
func follow(ctx context.Context, src source, keep filter, after eventstore.Position, bo backoff,
	handle func(context.Context, eventstore.RecordedEvent) error) error {
	attempt := 0
	for {
		sub, err := src.subscribe(ctx, after)
		if err == nil {
			var heard bool
			after, heard, err = deliver(ctx, sub, keep, after, handle)
			sub.close()
			if heard {
				attempt = 0
			}
		}
		var herr handlerError
		switch {
		case errors.As(err, &herr):
			return herr.err
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, eventstore.ErrUnavailable):
			return err
		}
		attempt++
		t := time.NewTimer(bo.delay(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// clientSource subscribes through the Store's current client.
type clientSource struct{ s *Store }

func (cs clientSource) subscribe(ctx context.Context, after eventstore.Position) (subscription, error) {
	s := cs.s
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	sub, err := c.SubscribeToAll(ctx, kurrentdb.SubscribeToAllOptions{
		From:   fromAll(after),
		Filter: s.filter.server(),
	})
	if err != nil {
		return nil, s.fail(ctx, c, "subscribe to $all after "+after.String(), err)
	}
	p := &pump{sub: sub, c: make(chan message), done: make(chan struct{})}
	go p.run(func(err error) error { return s.fail(ctx, c, "subscription to $all", err) })
	return p, nil
}

// pump turns the client's blocking Recv into a channel, so that callers can
// wait for it, ctx and a timer at once.
type pump struct {
	sub  *kurrentdb.Subscription
	c    chan message
	done chan struct{}
	once sync.Once
}

func (p *pump) messages() <-chan message { return p.c }

func (p *pump) close() {
	p.once.Do(func() {
		close(p.done)
		_ = p.sub.Close() // cancels the call, which ends a blocked Recv
	})
}

func (p *pump) run(mapErr func(error) error) {
	defer close(p.c)
	for {
		var m message
		ev := p.sub.Recv()
		switch {
		case ev.SubscriptionDropped != nil:
			err := ev.SubscriptionDropped.Error
			if err == nil {
				err = errNoMessages
			}
			m.err = mapErr(err)
		case ev.EventAppeared != nil:
			if ev.EventAppeared.Event == nil {
				continue
			}
			e := fromRecorded(ev.EventAppeared.Event)
			m.event = &e
		case ev.CheckPointReached != nil:
			// Progress through events the filter drops. Resuming from
			// it would save a rescan, but nothing needs it to be correct.
			m.checkpoint = true
		case ev.FellBehind != nil:
			continue // servers do not send it (yet); nothing to do if they do
		default:
			// "Caught up". The client hands it over as an empty event
			// when the server sent no timestamp with it.
			m.caughtUp = true
		}
		select {
		case p.c <- m:
		case <-p.done:
			return
		}
		if m.err != nil {
			return
		}
	}
}
