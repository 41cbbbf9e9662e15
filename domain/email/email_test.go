package email_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"evident/domain/email"
)

var (
	ann = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-00000000000a")
	bob = uuid.MustParse("0190f1e2-7a3b-7c4d-8e5f-00000000000b")
)

func hist(events ...email.Event) []email.Event { return events }

type claimCase struct {
	name  string
	given []email.Event // the claim stream
	owner uuid.UUID     // what Owner folds it to
	when  uuid.UUID     // the user claiming the address
	then  []email.Event
	err   error
}

// check is the one helper: fold the claim stream, claim, compare.
func check(t *testing.T, tc claimCase) {
	t.Helper()
	owner := email.Owner(tc.given)
	if owner != tc.owner {
		t.Fatalf("Owner = %v, want %v", owner, tc.owner)
	}
	got, err := email.Claim(owner, tc.when)
	if tc.err != nil {
		if !errors.Is(err, tc.err) || got != nil {
			t.Fatalf("got %#v, %v; want error %v", got, err, tc.err)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if !reflect.DeepEqual(got, tc.then) {
		t.Fatalf("events\n got: %#v\nwant: %#v", got, tc.then)
	}
}

func TestClaim(t *testing.T) {
	t.Parallel()
	claimedByAnn := hist(email.Claimed{UserID: ann})
	cases := []claimCase{
		{name: "free", owner: uuid.Nil, when: ann, then: hist(email.Claimed{UserID: ann})},
		{name: "own address is a no-op", given: claimedByAnn, owner: ann, when: ann},
		{name: "taken", given: claimedByAnn, owner: ann, when: bob, err: email.ErrTaken},
		{name: "released by owner frees it", given: hist(email.Claimed{UserID: ann}, email.Released{UserID: ann}),
			owner: uuid.Nil, when: bob, then: hist(email.Claimed{UserID: bob})},
		{name: "owner may take it back", given: hist(email.Claimed{UserID: ann}, email.Released{UserID: ann}),
			owner: uuid.Nil, when: ann, then: hist(email.Claimed{UserID: ann})},
		{name: "release by someone else frees nothing", given: hist(email.Claimed{UserID: ann}, email.Released{UserID: bob}),
			owner: ann, when: bob, err: email.ErrTaken},
		{name: "stale release after a new claim", given: hist(email.Claimed{UserID: ann}, email.Released{UserID: ann},
			email.Claimed{UserID: bob}, email.Released{UserID: ann}), owner: bob, when: ann, err: email.ErrTaken},
		{name: "passed on twice", given: hist(email.Claimed{UserID: ann}, email.Released{UserID: ann},
			email.Claimed{UserID: bob}, email.Released{UserID: bob}), owner: uuid.Nil, when: ann, then: hist(email.Claimed{UserID: ann})},
		{name: "unknown events are ignored", given: hist(nil, email.Claimed{UserID: ann}, nil), owner: ann, when: ann},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			check(t, tc)
		})
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	a, b := email.Stream("ann@example.com"), email.Stream("bob@example.com")
	if a != email.Stream("ann@example.com") {
		t.Error("Stream is not deterministic")
	}
	if a == b {
		t.Error("two addresses share a stream")
	}
	if !strings.HasPrefix(a, email.StreamPrefix) || strings.Contains(a, "ann") || strings.Contains(a, "@") {
		t.Errorf("stream name %q must be the prefix and a hash, never the address", a)
	}
	if len(a) != len(email.StreamPrefix)+64 {
		t.Errorf("stream name %q is not prefix + hex SHA-256", a)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range []email.Event{email.Claimed{UserID: ann}, email.Released{UserID: bob}} {
		if !email.IsType(e.EventType()) {
			t.Errorf("IsType(%q) = false", e.EventType())
		}
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := email.Decode(e.EventType(), data)
		if err != nil {
			t.Fatalf("decode %s: %v", e.EventType(), err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("round trip %s: got %#v, want %#v", e.EventType(), got, e)
		}
	}
	if email.TypeClaimed != "email.claimed" || email.TypeReleased != "email.released" {
		t.Error("claim event type names changed; never rename one")
	}
	for _, typ := range []string{"", "email", "email.deleted", "user.created"} {
		if email.IsType(typ) {
			t.Errorf("IsType(%q) = true", typ)
		}
		if e, err := email.Decode(typ, []byte(`{}`)); err == nil || e != nil {
			t.Errorf("Decode(%q) = %#v, %v; want an error", typ, e, err)
		}
	}
	for _, typ := range []string{email.TypeClaimed, email.TypeReleased} {
		if e, err := email.Decode(typ, []byte(`{"user_id":"nope"}`)); err == nil || e != nil {
			t.Errorf("Decode(%q, bad uuid) = %#v, %v; want an error", typ, e, err)
		}
	}
}
