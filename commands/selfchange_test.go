package commands_test

import (
	"context"
	"strings"
	"testing"

	"evident/commands"
	"evident/domain/user"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// userVersion is the version of a user's stream, read from the store.
func (f *fixture) userVersion(t *testing.T, id uuid.UUID) int64 {
	t.Helper()
	recs, err := f.events.ReadStream(context.Background(), commands.UserStream(id), 0)
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	return recs[len(recs)-1].Version
}

// A user changing their own e-mail or password proves it with their current
// password; a refusal stores nothing, in the user's stream or anywhere else.
func TestSelfCredentialChangeNeedsCurrentPassword(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const pw, newPW = "member-password-1", "member-password-2"
	id := f.activeUser(t, "self@example.org", pw)
	self := commands.Meta{ActorID: id.String()}
	before, all := f.userVersion(t, id), len(f.allEvents(t))

	refused := []struct {
		name string
		in   commands.UpdateInput
		want error
	}{
		{"password, none", commands.UpdateInput{Password: ptr(newPW)}, commands.ErrCurrentPasswordRequired},
		{"password, wrong", commands.UpdateInput{Password: ptr(newPW), CurrentPassword: "not-my-password"}, commands.ErrInvalidCurrentPassword},
		{"e-mail, none", commands.UpdateInput{Email: ptr("taken-over@example.org")}, commands.ErrCurrentPasswordRequired},
		{"e-mail, wrong", commands.UpdateInput{Email: ptr("taken-over@example.org"), CurrentPassword: "not-my-password"}, commands.ErrInvalidCurrentPassword},
		{"e-mail and name, none", commands.UpdateInput{Email: ptr("taken-over@example.org"), Name: ptr("Mallory")}, commands.ErrCurrentPasswordRequired},
		{"name, wrong one given", commands.UpdateInput{Name: ptr("Mallory"), CurrentPassword: "not-my-password"}, commands.ErrInvalidCurrentPassword},
	}
	for _, c := range refused {
		_, err := f.h.Update(ctx, self, id, c.in, nil)
		assert.ErrorIs(t, err, c.want, c.name)
	}
	assert.Equal(t, before, f.userVersion(t, id), "a refused change was appended")
	assert.Len(t, f.allEvents(t), all, "a refused change appended to some stream")
	_, err := f.h.Login(ctx, commands.Meta{}, "self@example.org", newPW)
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials, "the refused password works")
	_, err = f.h.EmailOwner(ctx, "taken-over@example.org")
	assert.ErrorIs(t, err, user.ErrNotFound, "the refused address was claimed")

	// Neither a name nor the address the user has already needs proof.
	r, err := f.h.Update(ctx, self, id, commands.UpdateInput{Name: ptr("Self"), Email: ptr(" SELF@example.org ")}, nil)
	require.NoError(t, err)
	assert.Equal(t, "Self", r.User.Name)

	r, err = f.h.Update(ctx, self, id, commands.UpdateInput{Password: ptr(newPW), CurrentPassword: pw}, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, r.Appended)
	_, err = f.h.Login(ctx, commands.Meta{}, "self@example.org", newPW)
	require.NoError(t, err)
	_, err = f.h.Login(ctx, commands.Meta{}, "self@example.org", pw)
	assert.ErrorIs(t, err, commands.ErrInvalidCredentials)

	_, err = f.h.Update(ctx, self, id, commands.UpdateInput{Email: ptr("moved@example.org"), CurrentPassword: pw}, nil)
	require.ErrorIs(t, err, commands.ErrInvalidCurrentPassword, "the old password after the change")
	r, err = f.h.Update(ctx, self, id, commands.UpdateInput{Email: ptr("moved@example.org"), CurrentPassword: newPW}, nil)
	require.NoError(t, err)
	assert.Equal(t, "moved@example.org", r.User.Email)
	_, err = f.h.Login(ctx, commands.Meta{}, "moved@example.org", newPW)
	require.NoError(t, err)
}

// Someone else's change — an admin's, a workflow's — needs no current
// password; an admin changing their own credentials does.
func TestCurrentPasswordOnlyForSelfChanges(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	member := f.activeUser(t, "member@example.org", "member-password-1")
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "boss@example.org", Name: "Boss", Password: "boss-password-1", Roles: []string{user.RoleAdmin}})
	require.NoError(t, err)
	boss := commands.Meta{ActorID: res.UserID.String()}

	_, err = f.h.Update(ctx, boss, member, commands.UpdateInput{Email: ptr("member2@example.org"), Password: ptr("reset-password-1")}, nil)
	require.NoError(t, err)
	_, err = f.h.Update(ctx, commands.Meta{ActorID: commands.System}, member, commands.UpdateInput{Password: ptr("reset-password-2")}, nil)
	require.NoError(t, err)
	_, err = f.h.Login(ctx, commands.Meta{}, "member2@example.org", "reset-password-2")
	require.NoError(t, err)

	_, err = f.h.Update(ctx, boss, res.UserID, commands.UpdateInput{Password: ptr("boss-password-2")}, nil)
	require.ErrorIs(t, err, commands.ErrCurrentPasswordRequired)
	_, err = f.h.Update(ctx, boss, res.UserID, commands.UpdateInput{Email: ptr("big-boss@example.org"), CurrentPassword: "boss-password-1"}, nil)
	require.NoError(t, err)
}

// bcrypt reads the first 72 bytes of a password: a current password longer
// than any stored one is wrong, whatever its first 72 bytes are.
func TestCurrentPasswordLongerThanBcryptReads(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pw := strings.Repeat("p", 72)
	id := f.activeUser(t, "long@example.org", pw)
	self := commands.Meta{ActorID: id.String()}
	_, err := f.h.Update(ctx, self, id, commands.UpdateInput{Email: ptr("long2@example.org"), CurrentPassword: pw + "whatever"}, nil)
	require.ErrorIs(t, err, commands.ErrInvalidCurrentPassword)
	_, err = f.h.Update(ctx, self, id, commands.UpdateInput{Email: ptr("long2@example.org"), CurrentPassword: pw}, nil)
	require.NoError(t, err)
}

// A user who has no password yet cannot prove a self change: a session
// needs a password, so the request cannot come from one, and it is refused.
func TestSelfChangeWithoutAPassword(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	res, err := f.h.Register(ctx, admin, commands.RegisterInput{Email: "nopw@example.org", Name: "N"})
	require.NoError(t, err)
	self := commands.Meta{ActorID: res.UserID.String()}
	_, err = f.h.Update(ctx, self, res.UserID, commands.UpdateInput{Email: ptr("nopw2@example.org")}, nil)
	require.ErrorIs(t, err, commands.ErrCurrentPasswordRequired)
	_, err = f.h.Update(ctx, self, res.UserID, commands.UpdateInput{Password: ptr("first-password"), CurrentPassword: "anything-at-all"}, nil)
	require.ErrorIs(t, err, commands.ErrInvalidCurrentPassword)
	assert.Equal(t, res.Version, f.userVersion(t, res.UserID))
}

// The proof holds for the state the change is appended to: when the
// password changes between the check and the append, the retry checks
// again, against the new one.
func TestCurrentPasswordCheckedAgainAfterAConcurrentPasswordChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.activeUser(t, "race@example.org", "old-password-1")
	store := &hooked{Store: f.events, prefix: commands.UserStream(id), appends: true}
	h := commands.NewHandler(store, f.rm, f.rm, nil, commands.Options{Now: f.clock, PasswordCost: bcrypt.MinCost})
	store.before = func() {
		_, err := f.h.Update(ctx, admin, id, commands.UpdateInput{Password: ptr("reset-by-admin-1")}, nil)
		require.NoError(t, err)
	}
	v := f.userVersion(t, id)
	_, err := h.Update(ctx, commands.Meta{ActorID: id.String()}, id,
		commands.UpdateInput{Password: ptr("attacker-password"), CurrentPassword: "old-password-1"}, nil)
	require.ErrorIs(t, err, commands.ErrInvalidCurrentPassword)
	assert.Equal(t, v+1, f.userVersion(t, id), "only the admin's reset is stored")
	_, err = f.h.Login(ctx, commands.Meta{}, "race@example.org", "reset-by-admin-1")
	require.NoError(t, err)
}
