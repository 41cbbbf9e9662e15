package arena

import (
	"bytes"
	"testing"

	"evident/eventstore"
)

// A copy is the value it was made from, and appending to one never
// overwrites the next, which shares its block.
func TestCopiesStayApart(t *testing.T) {
	var a Arena
	src := []byte("first")
	first := a.Bytes(src)
	second := a.Bytes([]byte("second"))
	src[0] = 'X' // a copy, not the caller's slice
	if string(first) != "first" || string(second) != "second" {
		t.Fatalf("copies %q, %q", first, second)
	}
	_ = append(first, "!!!!!!"...)
	if string(second) != "second" {
		t.Fatalf("an append to one copy changed the next: %q", second)
	}
	if s := a.String([]byte("stream-1")); s != "stream-1" {
		t.Fatalf("String = %q", s)
	}
	if a.Bytes(nil) != nil || a.Bytes([]byte{}) != nil {
		t.Fatal("an empty value must copy to nil")
	}
	big := bytes.Repeat([]byte("x"), blockSize+1)
	if got := a.Bytes(big); !bytes.Equal(got, big) {
		t.Fatal("a value larger than a block was not copied whole")
	}
}

func TestInternerReturnsOneStringPerValue(t *testing.T) {
	var in Interner
	a := in.String([]byte("user.created"))
	b := in.String([]byte("user.created"))
	if a != "user.created" || b != a || len(in.seen) != 1 {
		t.Fatalf("interned %q, %q, %d kept", a, b, len(in.seen))
	}
}

// A read's events are its own: the next read, which reuses the scratch
// slice, leaves them as they were.
func TestEventsOfOneReadStayItsOwn(t *testing.T) {
	var first Events
	for i := range 3 {
		first.Add(&eventstore.RecordedEvent{Stream: "a", Version: int64(i)})
	}
	got := first.Done()
	var second Events
	for i := range 5 {
		second.Add(&eventstore.RecordedEvent{Stream: "b", Version: int64(10 + i)})
	}
	_ = second.Done()
	if len(got) != 3 || cap(got) != 3 {
		t.Fatalf("len %d cap %d, want 3 and 3", len(got), cap(got))
	}
	for i, e := range got {
		if e.Stream != "a" || e.Version != int64(i) {
			t.Fatalf("event %d became %+v", i, e)
		}
	}
	var none Events
	if none.Done() != nil {
		t.Fatal("no events must read as nil")
	}
}

// A read that returns its limit gets the slice it was collected in (no
// copy); one that returns fewer gets a copy of exactly its events, and the
// next read never writes into a slice handed out.
func TestEventsOfAFullReadAreNotCopied(t *testing.T) {
	full := Events{Limit: 4}
	for i := range 4 {
		full.Add(&eventstore.RecordedEvent{Stream: "a", Version: int64(i)})
	}
	got := full.Done()
	if len(got) != 4 || cap(got) != 4 {
		t.Fatalf("len %d cap %d, want 4 and 4", len(got), cap(got))
	}
	part := Events{Limit: 4}
	for i := range 3 {
		part.Add(&eventstore.RecordedEvent{Stream: "b", Version: int64(i)})
	}
	if p := part.Done(); len(p) != 3 || cap(p) != 3 {
		t.Fatalf("partial read: len %d cap %d, want 3 and 3", len(p), cap(p))
	}
	for i, e := range got {
		if e.Stream != "a" || e.Version != int64(i) {
			t.Fatalf("event %d became %+v", i, e)
		}
	}
}
