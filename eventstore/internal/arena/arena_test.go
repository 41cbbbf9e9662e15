package arena

import (
	"bytes"
	"testing"
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
