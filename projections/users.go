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

func (usersProjection) Apply(tx *readmodels.Tx, ev eventstore.RecordedEvent) error {
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
	if c, ok := e.(user.Created); ok {
		// Upsert guarded by version: a replay of the create changes nothing.
		return tx.PutUser(readmodels.User{
			ID: c.UserID, Email: c.Email, Name: c.Name, Roles: c.Roles,
			Status: string(user.StatusPending), Version: ev.Version,
			CreatedAt: at, UpdatedAt: at, Position: ev.Position,
		})
	}
	u, err := tx.User(userID(e))
	if errors.Is(err, readmodels.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if ev.Version <= u.Version || u.Status == string(user.StatusDeleted) {
		return nil
	}
	switch e := e.(type) {
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
	return tx.PutUser(u)
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
