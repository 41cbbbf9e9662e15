// Package arena keeps the allocations of a read of the log few: the byte
// fields of the events one read returns are copied into a few shared
// blocks, instead of one allocation per field, and the events themselves
// into a slice of their exact number. A replay reads the whole log.
package arena

import (
	"slices"
	"sync"
	"unsafe"

	"evident/eventstore"
)

// blockSize is the smallest block; a larger value gets a block of its own size.
const blockSize = 64 << 10

// Arena hands out copies of byte slices from its blocks. A copy is never
// written again once handed out, and its capacity ends where it ends, so
// an append to it reallocates rather than overwrites its neighbour. Each
// copy keeps its whole block alive: use an Arena for the values of one read,
// which live and die together. The zero Arena is ready to use.
type Arena struct {
	block []byte
}

// Bytes returns a copy of b; nil for an empty b.
func (a *Arena) Bytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if cap(a.block)-len(a.block) < len(b) {
		a.block = make([]byte, 0, max(blockSize, len(b)))
	}
	n := len(a.block)
	a.block = append(a.block, b...)
	return a.block[n : n+len(b) : n+len(b)]
}

// String returns b as a string backed by a copy in the arena.
func (a *Arena) String(b []byte) string {
	c := a.Bytes(b)
	return unsafe.String(unsafe.SliceData(c), len(c))
}

// Interner returns one string per distinct value (event types: a handful).
type Interner struct {
	seen []string
}

// String returns the interned string equal to b.
func (in *Interner) String(b []byte) string {
	for _, s := range in.seen {
		if s == string(b) { // no allocation for the comparison
			return s
		}
	}
	s := string(b)
	if len(in.seen) < 64 {
		in.seen = append(in.seen, s)
	}
	return s
}

// scratch holds the events of reads in progress, so that a read returns a
// slice of exactly its events (one allocation) rather than one grown by
// doubling (twice its size and more).
var scratch = sync.Pool{New: func() any { return new([]eventstore.RecordedEvent) }}

// maxScratch is the largest scratch slice kept, in events.
const maxScratch = 1 << 14

// Events collects the events of one read. Add each, then take the result
// with Done, which also releases the Events.
type Events struct {
	// Limit is the most events the read can return, when known (0: not
	// known). A read that returns that many gets the slice it was collected
	// in, made at that size, without a copy: a replay reads full batches.
	Limit int

	evs *[]eventstore.RecordedEvent
}

// Add appends e.
func (c *Events) Add(e *eventstore.RecordedEvent) {
	if c.evs == nil {
		c.evs = scratch.Get().(*[]eventstore.RecordedEvent)
		if cap(*c.evs) == 0 && c.Limit > 0 {
			// A new scratch (the pool empties at every other GC, which
			// a replay starts every batch or two): no doubling to reach
			// the read's size.
			*c.evs = make([]eventstore.RecordedEvent, 0, min(c.Limit, maxScratch))
		}
	}
	*c.evs = append(*c.evs, *e)
}

// Done returns the events added, in order (nil when none), and releases c.
func (c *Events) Done() []eventstore.RecordedEvent {
	if c.evs == nil {
		return nil
	}
	if evs := *c.evs; len(evs) == cap(evs) && len(evs) == c.Limit {
		// Exactly full: the read's own slice; the pool keeps none.
		*c.evs = nil
		c.Release()
		return evs
	}
	out := slices.Clone(*c.evs)
	c.Release()
	return out
}

// Release lets the events added go without returning them (a failed read).
func (c *Events) Release() {
	if c.evs == nil {
		return
	}
	clear(*c.evs) // hold no event's bytes in the pool
	*c.evs = (*c.evs)[:0]
	if cap(*c.evs) <= maxScratch {
		scratch.Put(c.evs)
	}
	c.evs = nil
}
