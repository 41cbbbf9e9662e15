package projections

import (
	"errors"

	"evident/domain/user"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
)

type usersProjection struct{}

// Users projects user.* events into the users table: profile, status,
// roles, the stream version and timestamps from the events' occurred_at. A
// deleted user keeps its row with status "deleted". Only user.created makes
// a row; any other event for a user without a row is skipped, and nothing
// changes a deleted user's row again.
func Users() Projection { return usersProjection{} }

func (usersProjection) Name() string     { return NameUsers }
func (usersProjection) Tables() []string { return []string{"users"} }

func (p usersProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
	if !p.handles(ev.Type) {
		return nil
	}
	d := decode(&ev)
	if d.err != nil {
		return d.err
	}
	if _, ok := d.user.(user.Created); ok {
		// Upsert guarded by version: a replay of the create changes nothing.
		u, _ := nextUser(readmodels.User{}, false, &d)
		return tx.PutUser(u)
	}
	u, err := tx.User(userID(d.user))
	if errors.Is(err, readmodels.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	u, ok := nextUser(u, true, &d)
	if !ok {
		return nil
	}
	return tx.PutUser(u)
}

// nextUser returns the row that user event d makes of u (found: the row
// exists), and false when d leaves it as it is. A user.created makes a new
// row unless the row's version is d's or later (PutUser's guard).
func nextUser(u readmodels.User, found bool, d *event) (readmodels.User, bool) {
	ev, at := d.rec, d.at
	if c, ok := d.user.(user.Created); ok {
		if found && ev.Version <= u.Version {
			return u, false
		}
		return readmodels.User{
			ID: c.UserID, Email: c.Email, Name: c.Name, Roles: c.Roles,
			Status: string(user.StatusPending), Version: ev.Version,
			CreatedAt: at, UpdatedAt: at, Position: ev.Position,
		}, true
	}
	if !found || ev.Version <= u.Version || u.Status == string(user.StatusDeleted) {
		return u, false
	}
	switch e := d.user.(type) {
	case user.Updated:
		if e.Email != nil {
			u.Email = *e.Email
		}
		if e.Name != nil {
			u.Name = *e.Name
		}
		if e.Roles != nil {
			u.Roles = e.Roles
		}
	case user.Activated:
		u.Status = string(user.StatusActive)
		u.ActivatedAt = &at
	case user.Deactivated:
		u.Status = string(user.StatusInactive)
	case user.StatusChanged:
		u.Status = string(e.To)
	case user.Deleted:
		u.Status = string(user.StatusDeleted)
		u.DeletedAt = &at
	}
	u.Version, u.UpdatedAt, u.Position = ev.Version, at, ev.Position
	return u, true
}

func (p usersProjection) folder() folder {
	return &rowFolder[readmodels.User]{
		handles: p.handles,
		key: func(d *event) (uuid.UUID, bool) {
			if d.user == nil {
				return uuid.Nil, false
			}
			return userID(d.user), true
		},
		load: (*readmodels.Bulk).Users,
		next: nextUser,
		put:  (*readmodels.Bulk).PutUsers,
	}
}

// userID is the user an event of the user stream is about.
func userID(e user.Event) (id uuid.UUID) {
	switch e := e.(type) {
	case user.Created:
		return e.UserID
	case user.Updated:
		return e.UserID
	case user.ActivationRequested:
		return e.UserID
	case user.Activated:
		return e.UserID
	case user.Deactivated:
		return e.UserID
	case user.StatusChanged:
		return e.UserID
	case user.ActivationTokenExpired:
		return e.UserID
	case user.Deleted:
		return e.UserID
	}
	return id
}

func (usersProjection) handles(eventType string) bool { return user.IsType(eventType) }
