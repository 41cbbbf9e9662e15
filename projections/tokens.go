package projections

import (
	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
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

func (p tokensProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !p.handles(ev.Type) {
		return nil
	}
	d := decode(&ev)
	if d.err != nil {
		return d.err
	}
	return tokenEffects(&d, tx.ChangeActivationTokens, tx.InsertActivationToken)
}

// tokenEffects says what user event d does to the activation tokens, in
// order: change moves tokens from one status to another
// (Tx.ChangeActivationTokens), insert adds a token unless its hash exists
// (Tx.InsertActivationToken). The live path hands it the statements, a
// replay its in-memory rows.
func tokenEffects(d *event, change func(readmodels.TokenChange) error, insert func(readmodels.ActivationToken, int64) error) error {
	ev, at := d.rec, d.at
	pending := string(user.TokenPending)
	ch := func(c readmodels.TokenChange) error {
		c.UserID, c.Version = userID(d.user), ev.Version
		if c.At.IsZero() {
			c.At = at
		}
		return change(c)
	}
	switch e := d.user.(type) {
	case user.ActivationRequested:
		if err := ch(readmodels.TokenChange{Except: e.TokenHash, From: pending, To: string(user.TokenSuperseded)}); err != nil {
			return err
		}
		return insert(readmodels.ActivationToken{
			TokenHash: e.TokenHash, UserID: e.UserID, Status: pending, RequestedBy: e.RequestedBy,
			CreatedAt: at, ExpiresAt: e.ExpiresAt.UTC(),
		}, ev.Version)
	case user.Activated:
		used := ""
		if e.Method == user.MethodToken {
			used = e.TokenHash
		}
		if err := ch(readmodels.TokenChange{Except: used, From: pending, To: string(user.TokenRevoked)}); err != nil {
			return err
		}
		if used == "" {
			return nil
		}
		return ch(readmodels.TokenChange{Hash: used, To: string(user.TokenUsed)})
	case user.Deactivated, user.StatusChanged, user.Deleted:
		return ch(readmodels.TokenChange{From: pending, To: string(user.TokenRevoked)})
	case user.ActivationTokenExpired:
		return ch(readmodels.TokenChange{Hash: e.TokenHash, From: pending, To: string(user.TokenExpired), At: e.ExpiredAt.UTC()})
	}
	return nil
}

// touchesTokens reports whether tokenEffects does anything for d.
func touchesTokens(d *event) bool {
	switch d.user.(type) {
	case user.ActivationRequested, user.Activated, user.Deactivated, user.StatusChanged, user.Deleted, user.ActivationTokenExpired:
		return true
	}
	return false
}

func (tokensProjection) folder() folder {
	return &tokensFolder{rows: map[string]*readmodels.TokenRow{}, byUser: map[uuid.UUID][]string{}, seen: map[uuid.UUID]bool{}}
}

// tokensFolder folds a batch into the tokens of the users it touches (and
// the tokens it issues): read once, each changed token written once. Its
// change and insert do in memory what ChangeActivationTokens and
// InsertActivationToken do in SQL.
type tokensFolder struct {
	rows    map[string]*readmodels.TokenRow // by hash
	byUser  map[uuid.UUID][]string          // hashes by user
	order   []string                        // changed hashes, in first-change order
	changed map[string]bool
	users   []uuid.UUID
	seen    map[uuid.UUID]bool
	hashes  []string // issued in the batch
	loaded  map[string]readmodels.TokenRow
	out     []readmodels.TokenRow
}

func (f *tokensFolder) replay(b *readmodels.Bulk, evs []event) error {
	clear(f.rows)
	clear(f.byUser)
	clear(f.seen)
	if f.changed == nil {
		f.changed, f.loaded = map[string]bool{}, map[string]readmodels.TokenRow{}
	}
	clear(f.changed)
	clear(f.loaded)
	f.order, f.users, f.hashes = f.order[:0], f.users[:0], f.hashes[:0]
	for i := range evs {
		d := &evs[i]
		if d.err != nil && user.IsType(d.rec.Type) {
			return d.err
		}
		if !touchesTokens(d) {
			continue
		}
		if id := userID(d.user); !f.seen[id] {
			f.seen[id] = true
			f.users = append(f.users, id)
		}
		if e, ok := d.user.(user.ActivationRequested); ok {
			f.hashes = append(f.hashes, e.TokenHash)
		}
	}
	if len(f.users) == 0 {
		return nil
	}
	if err := b.ActivationTokens(f.users, f.hashes, f.loaded); err != nil {
		return err
	}
	for h, t := range f.loaded {
		f.rows[h] = &t
		f.byUser[t.UserID] = append(f.byUser[t.UserID], h)
	}
	for i := range evs {
		d := &evs[i]
		if !touchesTokens(d) {
			continue
		}
		if err := tokenEffects(d, f.change, f.insert); err != nil {
			return err
		}
	}
	f.out = f.out[:0]
	for _, h := range f.order {
		f.out = append(f.out, *f.rows[h])
	}
	err := b.PutActivationTokens(f.out)
	clear(f.out)
	return err
}

func (f *tokensFolder) mark(h string) {
	if !f.changed[h] {
		f.changed[h] = true
		f.order = append(f.order, h)
	}
}

// change is ChangeActivationTokens on the rows in memory.
func (f *tokensFolder) change(c readmodels.TokenChange) error {
	for _, h := range f.byUser[c.UserID] {
		t := f.rows[h]
		switch {
		case t.Version >= c.Version,
			c.Hash != "" && h != c.Hash,
			c.Hash == "" && c.Except != "" && h == c.Except,
			c.From != "" && t.Status != c.From:
			continue
		}
		at := c.At
		t.Status, t.EndedAt, t.Version = c.To, &at, c.Version
		f.mark(h)
	}
	return nil
}

// insert is InsertActivationToken on the rows in memory.
func (f *tokensFolder) insert(t readmodels.ActivationToken, version int64) error {
	if _, ok := f.rows[t.TokenHash]; ok {
		return nil
	}
	f.rows[t.TokenHash] = &readmodels.TokenRow{ActivationToken: t, Version: version}
	f.byUser[t.UserID] = append(f.byUser[t.UserID], t.TokenHash)
	f.mark(t.TokenHash)
	return nil
}

func (tokensProjection) handles(eventType string) bool { return user.IsType(eventType) }
