package projections

import (
	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"
)

type tokensProjection struct{}

// ActivationTokens projects the activation tokens (hashes only) of the user
// stream: a request adds a pending token and supersedes the user's earlier
// pending ones; an activation marks the token it used as used and revokes
// the other pending ones; a deactivation, status change or deletion revokes
// pending tokens; an expiry marks its token expired.
func ActivationTokens() Projection { return tokensProjection{} }

func (tokensProjection) Name() string     { return NameActivationTokens }
func (tokensProjection) Tables() []string { return []string{"activation_tokens"} }

func (tokensProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !user.IsType(ev.Type) {
		return nil
	}
	md, err := metadata(ev)
	if err != nil {
		return err
	}
	e, err := user.Decode(ev.Type, md.SchemaVersion, ev.Data)
	if err != nil {
		return err
	}
	at := occurredAt(ev, md)
	pending := string(user.TokenPending)
	change := func(c readmodels.TokenChange) error {
		c.UserID, c.Version = userID(e), ev.Version
		if c.At.IsZero() {
			c.At = at
		}
		return tx.ChangeActivationTokens(c)
	}
	switch e := e.(type) {
	case user.ActivationRequested:
		if err := change(readmodels.TokenChange{Except: e.TokenHash, From: pending, To: string(user.TokenSuperseded)}); err != nil {
			return err
		}
		return tx.InsertActivationToken(readmodels.ActivationToken{
			TokenHash: e.TokenHash, UserID: e.UserID, Status: pending, RequestedBy: e.RequestedBy,
			CreatedAt: at, ExpiresAt: e.ExpiresAt.UTC(),
		}, ev.Version)
	case user.Activated:
		used := ""
		if e.Method == user.MethodToken {
			used = e.TokenHash
		}
		if err := change(readmodels.TokenChange{Except: used, From: pending, To: string(user.TokenRevoked)}); err != nil {
			return err
		}
		if used == "" {
			return nil
		}
		return change(readmodels.TokenChange{Hash: used, To: string(user.TokenUsed)})
	case user.Deactivated, user.StatusChanged, user.Deleted:
		return change(readmodels.TokenChange{From: pending, To: string(user.TokenRevoked)})
	case user.ActivationTokenExpired:
		return change(readmodels.TokenChange{Hash: e.TokenHash, From: pending, To: string(user.TokenExpired), At: e.ExpiredAt.UTC()})
	}
	return nil
}
