// Package email guards the one rule that spans users: a normalised address
// belongs to at most one user that is not deleted. Each address has a claim
// stream named after its hash (no address in stream names), appended in the
// same atomic write as the user event that takes or frees it.
package email

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// Event type names; never rename or delete one.
const (
	TypeClaimed  = "email.claimed"
	TypeReleased = "email.released"
)

// ErrTaken means another user holds the address.
var ErrTaken = errors.New("email: address taken")

// StreamPrefix starts every claim stream's name.
const StreamPrefix = "email-"

// Stream is the claim stream of a normalised address.
func Stream(normalized string) string {
	sum := sha256.Sum256([]byte(normalized))
	return StreamPrefix + hex.EncodeToString(sum[:])
}

// Claimed records that a user took the address.
type Claimed struct {
	UserID uuid.UUID `json:"user_id"`
}

// Released records that the user gave the address up.
type Released struct {
	UserID uuid.UUID `json:"user_id"`
}

// Event is a claim event.
type Event interface{ EventType() string }

func (Claimed) EventType() string  { return TypeClaimed }
func (Released) EventType() string { return TypeReleased }

// IsType reports whether typ is a claim event type.
func IsType(typ string) bool { return typ == TypeClaimed || typ == TypeReleased }

// Decode turns a stored claim event back into its type.
func Decode(typ string, data []byte) (Event, error) {
	switch typ {
	case TypeClaimed:
		var v Claimed
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("email: decode %s: %w", typ, err)
		}
		return v, nil
	case TypeReleased:
		var v Released
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, fmt.Errorf("email: decode %s: %w", typ, err)
		}
		return v, nil
	}
	return nil, fmt.Errorf("email: unknown event type %q", typ)
}

// Owner folds a claim stream: the user holding the address, or uuid.Nil.
func Owner(events []Event) uuid.UUID {
	var owner uuid.UUID
	for _, e := range events {
		switch e := e.(type) {
		case Claimed:
			owner = e.UserID
		case Released:
			if owner == e.UserID {
				owner = uuid.Nil
			}
		}
	}
	return owner
}

// Claim decides whether user may take the address now held by owner.
func Claim(owner, user uuid.UUID) ([]Event, error) {
	switch owner {
	case user:
		return nil, nil
	case uuid.Nil:
		return []Event{Claimed{UserID: user}}, nil
	}
	return nil, ErrTaken
}
