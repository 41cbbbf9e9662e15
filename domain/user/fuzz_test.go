package user_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"evident/domain/user"
)

// The fuzzer reads its input as a program of (op, arg) byte pairs. Ops below
// rawEventOp build a command from small pools and run it through Decide;
// the rest apply an arbitrary event straight to Evolve, to reach states
// Decide alone would not produce.
const rawEventOp = 200

var (
	fuzzHashes = []string{h1, h2, "hash-3", "never-requested"}
	fuzzEmails = []string{"ann@example.com", "bob@example.com", "cy@example.org"}
	fuzzNames  = []string{"Ann", "Bob", "Cy"}
	// Roles as NormalizeRoles returns them: never empty.
	fuzzRoles = [][]string{{"member"}, {"admin"}, {"admin", "member"}, {"auditor"}}
	fuzzCreds = []uuid.UUID{credA, credB}
	fuzzStats = []user.Status{user.StatusPending, user.StatusActive, user.StatusInactive, user.StatusSuspended, user.StatusDeleted, "", "zombie"}
)

func pick[T any](xs []T, b byte) T { return xs[int(b)%len(xs)] }

func fuzzCommand(op, arg byte, now time.Time) user.Command {
	switch op % 10 {
	case 0:
		return user.Register{UserID: id, Email: pick(fuzzEmails, arg), Name: pick(fuzzNames, arg>>2), Roles: pick(fuzzRoles, arg>>4)}
	case 1:
		c := user.Update{By: "u"}
		if arg&1 != 0 {
			c.Email = ptr(pick(fuzzEmails, arg>>4))
		}
		if arg&2 != 0 {
			c.Name = ptr(pick(fuzzNames, arg>>4))
		}
		if arg&4 != 0 {
			c.Roles = pick(fuzzRoles, arg>>4)
		}
		if arg&8 != 0 {
			c.CredentialID = ptr(pick(fuzzCreds, arg>>4))
		}
		return c
	case 2:
		return user.RequestActivation{TokenHash: pick(fuzzHashes[:3], arg), ExpiresAt: now.Add(time.Duration(arg>>2) * 15 * time.Minute), By: "admin"}
	case 3:
		return user.Activate{Method: user.MethodToken, TokenHash: pick(fuzzHashes, arg), By: "anon"}
	case 4:
		return user.Activate{Method: user.MethodAdmin, By: "admin"}
	case 5:
		return user.Activate{Method: user.MethodAuto, By: "system"}
	case 6:
		return user.Deactivate{By: "admin", Reason: "r"}
	case 7:
		return user.Suspend{By: "admin", Reason: "r"}
	case 8:
		return user.Delete{By: "admin", Reason: "r"}
	default:
		return user.ExpireToken{TokenHash: pick(fuzzHashes, arg)}
	}
}

// fuzzEvent builds any event, sensible or not, that survives JSON intact.
func fuzzEvent(op, arg byte, now time.Time) user.Event {
	h := pick(fuzzHashes, arg)
	switch op % 8 {
	case 0:
		return user.Created{UserID: id, Email: pick(fuzzEmails, arg), Name: pick(fuzzNames, arg), Roles: pick(fuzzRoles, arg)}
	case 1:
		return user.Updated{UserID: id, Name: ptr(pick(fuzzNames, arg)), Roles: pick(fuzzRoles, arg>>2)}
	case 2:
		return user.ActivationRequested{UserID: id, TokenHash: h, ExpiresAt: now.Add(time.Duration(arg) * time.Minute)}
	case 3:
		return user.Activated{UserID: id, Method: pick([]string{user.MethodToken, user.MethodAdmin, user.MethodAuto}, arg>>2), TokenHash: h}
	case 4:
		return user.Deactivated{UserID: id}
	case 5:
		return user.StatusChanged{UserID: id, From: pick(fuzzStats, arg), To: pick(fuzzStats, arg>>3)}
	case 6:
		return user.ActivationTokenExpired{UserID: id, TokenHash: h, ExpiredAt: now}
	default:
		return user.Deleted{UserID: id}
	}
}

func cloneState(s user.State) user.State {
	c := s
	c.Roles = slices.Clone(s.Roles)
	c.Tokens = maps.Clone(s.Tokens)
	if s.CredentialID != nil {
		c.CredentialID = ptr(*s.CredentialID)
	}
	return c
}

func apply(s user.State, events []user.Event) user.State {
	for _, e := range events {
		s = user.Evolve(s, e)
	}
	return s
}

var knownErrs = []error{
	user.ErrNotFound, user.ErrExists, user.ErrDeleted, user.ErrAlreadyActive,
	user.ErrInvalidToken, user.ErrTokenExpired, user.ErrTokenUsed,
}

func FuzzDecide(f *testing.F) {
	f.Add([]byte{0, 0, 2, 4, 3, 0})                          // register, request, activate by token
	f.Add([]byte{0, 0, 2, 0, 2, 1, 3, 0, 3, 1})              // supersede
	f.Add([]byte{0, 0, 2, 0, 9, 15, 9, 0, 3, 0})             // expire, then try the token
	f.Add([]byte{0, 0, 4, 0, 7, 0, 6, 0, 4, 0, 8, 0, 1, 15}) // the whole life
	f.Add([]byte{0, 0, 205, 37, 2, 1, 6, 0, 3, 1})           // odd status from a raw event
	f.Add([]byte{0, 0, 1, 255, 1, 255, 2, 200, 9, 9})

	f.Fuzz(func(t *testing.T, prog []byte) {
		var (
			s   user.State
			log []user.Event
			now = t0
		)
		for i := 0; i+1 < len(prog); i += 2 {
			op, arg := prog[i], prog[i+1]
			// The clock mostly moves on but may step back, as clocks do.
			now = now.Add(time.Duration(int(arg%16)-3) * 20 * time.Minute)

			if op >= rawEventOp {
				e := fuzzEvent(op, arg, now)
				prev := cloneState(s)
				next := user.Evolve(s, e) // must not panic
				if !reflect.DeepEqual(s, prev) {
					t.Fatalf("Evolve(%#v) changed the state it was given", e)
				}
				s, log = next, append(log, e)
				continue
			}

			c := fuzzCommand(op, arg, now)
			prev := cloneState(s)
			events, err := user.Decide(s, c, now)
			if !reflect.DeepEqual(s, prev) {
				t.Fatalf("Decide(%#v) changed the state it was given", c)
			}

			if err != nil {
				if events != nil {
					t.Fatalf("Decide(%#v) = %#v and %v: events alongside an error", c, events, err)
				}
				if !slices.ContainsFunc(knownErrs, func(k error) bool { return errors.Is(err, k) }) {
					t.Fatalf("Decide(%#v): unexpected error %v", c, err)
				}
			} else if events != nil && len(events) == 0 {
				t.Fatalf("Decide(%#v) returned an empty, non-nil slice; a no-op is nil", c)
			}

			// A deleted user accepts no command.
			if s.Exists && s.Status == user.StatusDeleted && err == nil {
				t.Fatalf("deleted user accepted %#v: %#v", c, events)
			}
			if s.Exists && s.Status == user.StatusDeleted {
				if _, isReg := c.(user.Register); !isReg && !errors.Is(err, user.ErrDeleted) {
					t.Fatalf("deleted user: %#v gave %v, want ErrDeleted", c, err)
				}
			}

			next := apply(s, events)
			for _, e := range events {
				if !user.IsType(e.EventType()) {
					t.Fatalf("Decide produced an unregistered event %#v", e)
				}
			}

			// After a command took effect, the same command again changes nothing.
			if err == nil && events != nil {
				again, err2 := user.Decide(next, c, now)
				switch c := c.(type) {
				case user.Update, user.Deactivate, user.Suspend, user.ExpireToken:
					if again != nil || err2 != nil {
						t.Fatalf("%#v repeated: %#v, %v; want a no-op", c, again, err2)
					}
				case user.Activate:
					var want error // admin and auto: a no-op
					if c.Method == user.MethodToken {
						want = user.ErrTokenUsed
					}
					if again != nil || !errors.Is(err2, want) {
						t.Fatalf("%#v repeated: %#v, %v; want nil, %v", c, again, err2, want)
					}
					if next.Status != user.StatusActive {
						t.Fatalf("after %#v status is %q", c, next.Status)
					}
				case user.Delete:
					if !errors.Is(err2, user.ErrDeleted) || next.Status != user.StatusDeleted {
						t.Fatalf("after delete: status %q, again %v", next.Status, err2)
					}
				case user.Register:
					if !errors.Is(err2, user.ErrExists) || next.Status != user.StatusPending {
						t.Fatalf("after register: status %q, again %v", next.Status, err2)
					}
				case user.RequestActivation:
					if next.Status != s.Status || len(next.PendingTokens()) != 1 || next.Tokens[c.TokenHash].Status != user.TokenPending {
						t.Fatalf("after %#v: state %#v", c, next)
					}
				}
				switch c.(type) {
				case user.Deactivate:
					if next.Status != user.StatusInactive {
						t.Fatalf("after deactivate status is %q", next.Status)
					}
				case user.Suspend:
					if next.Status != user.StatusSuspended {
						t.Fatalf("after suspend status is %q", next.Status)
					}
				}
			}
			// At most one token is ever pending.
			if n := len(next.PendingTokens()); n > 1 {
				t.Fatalf("%d pending tokens after %#v", n, c)
			}
			s, log = next, append(log, events...)
		}

		// Replaying the log as stored (JSON, then Decode) gives the same state.
		var replayed user.State
		for _, e := range log {
			data, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal %#v: %v", e, err)
			}
			d, err := user.Decode(e.EventType(), user.SchemaVersion, data)
			if err != nil {
				t.Fatalf("decode %s: %v", data, err)
			}
			if !reflect.DeepEqual(d, e) {
				t.Fatalf("round trip\n got: %#v\nwant: %#v", d, e)
			}
			replayed = user.Evolve(replayed, d)
		}
		if !reflect.DeepEqual(replayed, s) {
			t.Fatalf("replayed state differs\n got: %#v\nwant: %#v", replayed, s)
		}
	})
}
