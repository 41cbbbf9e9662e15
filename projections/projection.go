package projections

import (
	"github.com/google/uuid"

	"time"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"
)

// Projection keeps read-model tables in step with the log. Apply is called
// once per event in log order, inside the transaction that also moves the
// projection's checkpoint; it must not commit, and it must skip event types
// it does not know (returning nil). An error from Apply means this event
// cannot be applied now; after the retries the event is parked.
type Projection interface {
	Name() string
	Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error
}

// Tabled is a Projection that can say which tables it owns, so that a
// rebuild can clear them. Every projection of this package is one.
type Tabled interface {
	Tables() []string
}

// Projection names; they are checkpoint keys and never change.
const (
	NameUsers            = "users"
	NameSessions         = "sessions"
	NameActivationTokens = "activation_tokens"
	NameAudit            = "audit"
)

// All returns every projection of Evident.
func All() []Projection {
	return []Projection{Users(), Sessions(), ActivationTokens(), Audit()}
}

// occurredAt is when the event happened as its metadata says; the time the
// store recorded it when the metadata does not. It never reads the clock, so
// a rebuild writes the same rows as the live projection.
func occurredAt(ev eventstore.RecordedEvent, md envelope) time.Time {
	if !md.occurredAt.IsZero() {
		return md.occurredAt.UTC()
	}
	return ev.RecordedAt.UTC()
}

// event is a recorded event with its metadata and data decoded, once for
// every projection: the live path decodes each event it applies, a replay
// each event of a batch.
type event struct {
	rec  *eventstore.RecordedEvent
	md   envelope
	at   time.Time     // occurredAt
	user user.Event    // a user.* event
	sess session.Event // an auth.* event
	err  error         // its metadata or data could not be decoded
}

// decode decodes a user.* or auth.* event; any other is returned with
// neither user nor sess set (and err nil): no projection reads it.
func decode(ev *eventstore.RecordedEvent) event {
	d := event{rec: ev}
	isUser, isSession := user.IsType(ev.Type), session.IsType(ev.Type)
	if !isUser && !isSession {
		return d
	}
	if d.md, d.err = metadata(*ev); d.err != nil {
		return d
	}
	d.at = occurredAt(*ev, d.md)
	if isUser {
		d.user, d.err = decodeUser(ev.Type, d.md.schema, ev.Data)
	} else {
		d.sess, d.err = decodeSession(ev.Type, d.md.schema, ev.Data)
	}
	return d
}

// replayer is a projection that a rebuild can replay a batch at a time:
// its folder folds a batch's events into rows in memory and writes each
// changed row once, the rows its Apply writes event by event.
type replayer interface {
	folder() folder
}

// folder replays batches of one projection, keeping its buffers from one
// batch to the next. An error from replay means the batch must be applied
// event by event (Apply), which then retries or parks the event at fault.
type folder interface {
	replay(b *readmodels.Bulk, evs []event) error
}

// selective is a projection that can tell, from an event's type alone,
// that its Apply does nothing with it.
type selective interface {
	handles(eventType string) bool
}

// handlesAny reports whether p may change a row for any of evs: false only
// when p is selective and none of their types is one it handles.
func handlesAny(p Projection, evs []eventstore.RecordedEvent) bool {
	s, ok := p.(selective)
	if !ok {
		return true
	}
	for i := range evs {
		if s.handles(evs[i].Type) {
			return true
		}
	}
	return false
}

// rowFolder folds a batch into the rows of one table that its events touch,
// keyed by id: each row read once, the events applied in log order with the
// same function the live path uses, each changed row written once, in the
// order the batch first touched them.
type rowFolder[R any] struct {
	handles func(eventType string) bool
	key     func(d *event) (uuid.UUID, bool) // the row d is about; false: none
	load    func(b *readmodels.Bulk, ids []uuid.UUID, into map[uuid.UUID]R) error
	next    func(r R, found bool, d *event) (R, bool)
	put     func(b *readmodels.Bulk, rows []R) error

	rows    map[uuid.UUID]R
	ids     []uuid.UUID
	changed map[uuid.UUID]bool
	out     []R
}

func (f *rowFolder[R]) replay(b *readmodels.Bulk, evs []event) error {
	if f.rows == nil {
		f.rows, f.changed = map[uuid.UUID]R{}, map[uuid.UUID]bool{}
	}
	clear(f.rows)
	clear(f.changed)
	f.ids = f.ids[:0]
	for i := range evs {
		d := &evs[i]
		if d.err != nil && f.handles(d.rec.Type) {
			return d.err
		}
		if id, ok := f.key(d); ok {
			if _, seen := f.changed[id]; !seen {
				f.changed[id] = false
				f.ids = append(f.ids, id)
			}
		}
	}
	if len(f.ids) == 0 {
		return nil
	}
	if err := f.load(b, f.ids, f.rows); err != nil {
		return err
	}
	for i := range evs {
		d := &evs[i]
		id, ok := f.key(d)
		if !ok {
			continue
		}
		r, found := f.rows[id]
		if r, ok := f.next(r, found, d); ok {
			f.rows[id] = r
			f.changed[id] = true
		}
	}
	f.out = f.out[:0]
	for _, id := range f.ids {
		if f.changed[id] {
			f.out = append(f.out, f.rows[id])
		}
	}
	err := f.put(b, f.out)
	clear(f.out) // let the rows go
	return err
}
