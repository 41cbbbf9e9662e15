package readmodels

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"evident/eventstore"

	"github.com/google/uuid"
)

// Tx is one read-model transaction, handed out by Store.Update. Its writes
// are idempotent on their own (ON CONFLICT DO NOTHING, version guards), so
// applying an event twice changes nothing even without the checkpoint.
type Tx struct {
	ctx     context.Context // Update's; a Tx lives only inside it
	tx      *sql.Tx
	q       execer // runs statements in tx (on SQLite, prepared: cachedTx)
	now     func() time.Time
	dialect string
	// checkpointed is set once the transaction wrote a checkpoint, so that
	// Update wakes the waiters after the commit.
	checkpointed bool
	// shadows maps a projection table to the table its statements go to
	// instead (Shadow.Tx); nil on the live path.
	shadows map[string]string
	// async: the commit need not wait for the WAL flush (UpdateAsync, PostgreSQL).
	async bool
	// batch holds the writes of a batched Tx (UpdateAsync, PostgreSQL) until
	// they are sent; nil otherwise, and then tx is the transaction.
	batch *batch
}

// rel is how a statement names projection table t: t itself, or on a shadow
// Tx its shadow aliased as t, so that the statement's references to t (as in
// "WHERE users.version < excluded.version") stay valid. The live path's SQL
// text is unchanged, and so are its cached statements.
func (tx *Tx) rel(t string) string {
	if s, ok := tx.shadows[t]; ok {
		return s + " AS " + t
	}
	return t
}

// User reads a user row inside the transaction, or ErrNotFound.
func (tx *Tx) User(id uuid.UUID) (User, error) {
	q, err := tx.reader()
	if err != nil {
		return User{}, err
	}
	return getUser(tx.ctx, q, tx.rel("users"), id)
}

// PutUser inserts the user or, when the row exists, overwrites it only if
// u.Version is newer than the stored one.
func (tx *Tx) PutUser(u User) error {
	roles := u.Roles
	if roles == nil {
		roles = []string{}
	}
	rolesJSON, err := json.Marshal(roles)
	if err != nil {
		return fmt.Errorf("readmodels: user %s roles: %w", u.ID, classify(err))
	}
	err = tx.exec(`INSERT INTO `+tx.rel("users")+` (`+userColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET
			email = excluded.email, name = excluded.name, roles = excluded.roles,
			status = excluded.status, version = excluded.version,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			activated_at = excluded.activated_at, deleted_at = excluded.deleted_at,
			position = excluded.position
		WHERE users.version < excluded.version`,
		u.ID.String(), u.Email, u.Name, string(rolesJSON), u.Status, u.Version,
		micros(u.CreatedAt), micros(u.UpdatedAt), nullMicros(u.ActivatedAt), nullMicros(u.DeletedAt),
		u.Position.String())
	if err != nil {
		return fmt.Errorf("readmodels: put user %s: %w", u.ID, classify(err))
	}
	return nil
}

// Session reads a session row (status as stored) inside the transaction, or ErrNotFound.
func (tx *Tx) Session(id uuid.UUID) (Session, error) {
	q, err := tx.reader()
	if err != nil {
		return Session{}, err
	}
	s, err := scanSession(q.QueryRowContext(tx.ctx, `SELECT `+rawSessionColumns+` FROM `+tx.rel("sessions")+` WHERE id = $1`, id.String()))
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("readmodels: session %s: %w", id, classify(err))
	}
	return s, nil
}

// PutSession inserts the session or, when the row exists, overwrites it only
// if s.Version is newer than the stored one.
func (tx *Tx) PutSession(s Session) error {
	err := tx.exec(`INSERT INTO `+tx.rel("sessions")+` (`+rawSessionColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (id) DO UPDATE SET
			user_id = excluded.user_id, status = excluded.status,
			created_at = excluded.created_at, expires_at = excluded.expires_at,
			ended_at = excluded.ended_at, end_reason = excluded.end_reason,
			version = excluded.version
		WHERE sessions.version < excluded.version`,
		s.ID.String(), s.UserID.String(), s.Status, micros(s.CreatedAt), micros(s.ExpiresAt),
		nullMicros(s.EndedAt), s.EndReason, s.Version)
	if err != nil {
		return fmt.Errorf("readmodels: put session %s: %w", s.ID, classify(err))
	}
	return nil
}

// InsertActivationToken adds a token; an existing hash is left as it is.
// version is the user stream's version of the event that issued it.
func (tx *Tx) InsertActivationToken(t ActivationToken, version int64) error {
	err := tx.exec(`INSERT INTO `+tx.rel("activation_tokens")+`
		(token_hash, user_id, status, requested_by, version, created_at, expires_at, ended_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (token_hash) DO NOTHING`,
		t.TokenHash, t.UserID.String(), t.Status, t.RequestedBy, version,
		micros(t.CreatedAt), micros(t.ExpiresAt), nullMicros(t.EndedAt))
	if err != nil {
		return fmt.Errorf("readmodels: insert activation token: %w", classify(err))
	}
	return nil
}

// TokenChange moves activation tokens from one status to another. version is
// the user stream's version of the event causing it: a token already changed
// by that event or a later one is left alone.
type TokenChange struct {
	UserID  uuid.UUID
	Hash    string // one token; empty for all of the user's tokens
	Except  string // with Hash empty: leave this token out
	From    string // only tokens in this status; empty for any status
	To      string
	At      time.Time
	Version int64
}

// ChangeActivationTokens applies c.
func (tx *Tx) ChangeActivationTokens(c TokenChange) error {
	var a args
	q := `UPDATE ` + tx.rel("activation_tokens") + ` SET status = ` + a.add(c.To) +
		`, ended_at = ` + a.add(micros(c.At)) + `, version = ` + a.add(c.Version) +
		` WHERE user_id = ` + a.add(c.UserID.String()) + ` AND version < ` + a.add(c.Version)
	if c.Hash != "" {
		q += ` AND token_hash = ` + a.add(c.Hash)
	} else if c.Except != "" {
		q += ` AND token_hash <> ` + a.add(c.Except)
	}
	if c.From != "" {
		q += ` AND status = ` + a.add(c.From)
	}
	if err := tx.exec(q, a...); err != nil {
		return fmt.Errorf("readmodels: change activation tokens of %s: %w", c.UserID, classify(err))
	}
	return nil
}

// InsertAudit adds an audit record; one already there (same event id or
// position) is left as it is.
func (tx *Tx) InsertAudit(r AuditRecord) error {
	var userID sql.NullString
	if r.UserID != nil {
		userID = sql.NullString{String: r.UserID.String(), Valid: true}
	}
	details, meta := string(r.Details), string(r.Metadata)
	if details == "" {
		details = "{}"
	}
	if meta == "" {
		meta = "{}"
	}
	err := tx.exec(`INSERT INTO `+tx.rel("audit")+` (`+auditColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT DO NOTHING`,
		r.EventID.String(), r.EventType, r.AggregateID, r.AggregateType, userID, r.ActorID, r.Action,
		r.Resource, r.ResourceID, details, meta, micros(r.OccurredAt),
		int64(r.Position.Commit), int64(r.Position.Prepare))
	if err != nil {
		return fmt.Errorf("readmodels: insert audit %s: %w", r.EventID, classify(err))
	}
	return nil
}

// Checkpoint returns the stored position of name inside the transaction;
// the zero Position when it has none.
func (tx *Tx) Checkpoint(name string) (eventstore.Position, error) {
	q, err := tx.reader()
	if err != nil {
		return eventstore.Position{}, err
	}
	return checkpoint(tx.ctx, q, name)
}

// SetCheckpoint stores name's position, wherever it was. Projections and
// reactors use AdvanceCheckpoint, which refuses to move a checkpoint another
// process moved.
func (tx *Tx) SetCheckpoint(name string, pos eventstore.Position) error {
	err := tx.exec(`INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`,
		name, pos.String(), micros(tx.now()))
	if err != nil {
		return fmt.Errorf("readmodels: set checkpoint %s: %w", name, classify(err))
	}
	return tx.notify(name, pos)
}

// AdvanceCheckpoint moves name's checkpoint from from to to. When the stored
// checkpoint is not from (another process, a zombie leader or a reset,
// moved it since the caller read it) it changes nothing and returns
// ErrCheckpointMoved: the caller must roll the transaction back, so that
// rows and checkpoint stay together, and re-read the checkpoint. The zero
// from means "no checkpoint yet".
//
// On PostgreSQL the second of two concurrent writers waits for the first's
// row lock and then sees the moved checkpoint, so of two processes that
// apply the same events only one commits.
func (tx *Tx) AdvanceCheckpoint(name string, from, to eventstore.Position) error {
	if tx.batch != nil {
		return tx.advanceBatched([]CheckpointMove{{Name: name, From: from, To: to}})
	}
	if err := advanceCheckpoint(tx.ctx, tx.q, tx.async, tx.now(), name, from, to); err != nil {
		return err
	}
	return tx.notify(name, to)
}

// CheckpointMove is one checkpoint moving, in AdvanceCheckpoints.
type CheckpointMove struct {
	Name     string
	From, To eventstore.Position
}

// CheckpointsMovedError is ErrCheckpointMoved for some of the checkpoints of
// an AdvanceCheckpoints: Names were not at their From.
type CheckpointsMovedError struct{ Names []string }

func (e *CheckpointsMovedError) Error() string {
	return fmt.Sprintf("readmodels: advance checkpoints %v: %v", e.Names, ErrCheckpointMoved)
}

// Is makes a CheckpointsMovedError an ErrCheckpointMoved.
func (e *CheckpointsMovedError) Is(target error) bool { return target == ErrCheckpointMoved }

// AdvanceCheckpoints is AdvanceCheckpoint for several checkpoints at once:
// every move whose From is not zero goes in one statement, so a transaction
// that moves the checkpoints of several projections pays one round trip for
// them. When some were not at their From it returns a
// *CheckpointsMovedError naming all of them; the caller must roll back, as
// after AdvanceCheckpoint. Names must differ.
func (tx *Tx) AdvanceCheckpoints(moves []CheckpointMove) error {
	if tx.batch != nil {
		return tx.advanceBatched(moves)
	}
	var (
		moved []string
		a     args
		rows  []string
	)
	now := a.add(micros(tx.now()))
	for _, m := range moves {
		if m.From.IsZero() {
			// No row to update yet: the conditional insert of its own.
			err := advanceCheckpoint(tx.ctx, tx.q, tx.async, tx.now(), m.Name, m.From, m.To)
			if errors.Is(err, ErrCheckpointMoved) {
				moved = append(moved, m.Name)
			} else if err != nil {
				return err
			}
			continue
		}
		rows = append(rows, "("+a.add(m.Name)+", "+a.add(m.From.String())+", "+a.add(m.To.String())+")")
	}
	if len(rows) > 0 {
		returning := "checkpoints.name"
		if tx.async {
			returning += ", set_config('synchronous_commit', 'off', true)"
		}
		// VALUES names its columns column1… on both dialects.
		q := `UPDATE checkpoints SET position = v.column3, updated_at = ` + now + `
			FROM (VALUES ` + strings.Join(rows, ", ") + `) AS v
			WHERE checkpoints.name = v.column1 AND checkpoints.position = v.column2
			RETURNING ` + returning
		got, err := tx.updatedNames(q, a)
		if err != nil {
			return fmt.Errorf("readmodels: advance checkpoints: %w", classify(err))
		}
		for _, m := range moves {
			if !m.From.IsZero() && !got[m.Name] {
				moved = append(moved, m.Name)
			}
		}
	}
	if len(moved) > 0 {
		return &CheckpointsMovedError{Names: moved}
	}
	if len(moves) > 0 {
		return tx.notify(moves[0].Name, moves[0].To)
	}
	return nil
}

// updatedNames runs q and returns the set of its rows' first column.
func (tx *Tx) updatedNames(q string, a args) (map[string]bool, error) {
	rs, err := tx.q.QueryContext(tx.ctx, q, a...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return nil, err
	}
	got := map[string]bool{}
	dest := make([]any, len(cols))
	var name string
	dest[0] = &name
	for i := 1; i < len(dest); i++ {
		dest[i] = new(sql.RawBytes)
	}
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return nil, err
		}
		got[name] = true
	}
	return got, rs.Err()
}

// advanceCheckpoint moves name's checkpoint from from to to in one
// statement, or fails with ErrCheckpointMoved when it is not at from.
// async turns off the wait for the WAL flush of the statement's
// transaction (PostgreSQL; see UpdateAsync), in the same statement.
func advanceCheckpoint(ctx context.Context, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, async bool, now time.Time, name string, from, to eventstore.Position) error {
	returning := ""
	if async {
		returning = ` RETURNING set_config('synchronous_commit', 'off', true)`
	}
	var (
		res sql.Result
		err error
	)
	if from.IsZero() {
		res, err = db.ExecContext(ctx, `INSERT INTO checkpoints (name, position, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
			WHERE checkpoints.position = $4`+returning,
			name, to.String(), micros(now), from.String())
	} else {
		res, err = db.ExecContext(ctx, `UPDATE checkpoints SET position = $1, updated_at = $2
			WHERE name = $3 AND position = $4`+returning,
			to.String(), micros(now), name, from.String())
	}
	if err != nil {
		return fmt.Errorf("readmodels: advance checkpoint %s: %w", name, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("readmodels: advance checkpoint %s: %w", name, classify(err))
	}
	if n != 1 {
		return fmt.Errorf("readmodels: advance checkpoint %s from %s: %w", name, from, ErrCheckpointMoved)
	}
	return nil
}

// notify records that the transaction wrote name's checkpoint, so that
// Update wakes this process's waiters after the commit and, on PostgreSQL,
// has the Store's notifier tell the other processes (Store.notifyOthers).
// Nothing is sent inside the transaction: a NOTIFY there takes a
// cluster-wide lock that is held until the commit is flushed, which
// serialises every commit on the server.
func (tx *Tx) notify(string, eventstore.Position) error {
	tx.checkpointed = true
	return nil
}

// Park records an event that p.Projection gave up on. ParkedAt defaults to
// now. Parking the same event twice keeps the latest error and attempts.
func (tx *Tx) Park(p ParkedEvent) error {
	if p.ParkedAt.IsZero() {
		p.ParkedAt = tx.now()
	}
	err := tx.exec(`INSERT INTO parked_events
		(projection, event_id, position, event_type, error, attempts, parked_at, stream, version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (projection, event_id) DO UPDATE SET
			error = excluded.error, attempts = excluded.attempts, parked_at = excluded.parked_at`,
		p.Projection, p.EventID, p.Position.String(), p.EventType, p.Error, p.Attempts, micros(p.ParkedAt), p.Stream, p.Version)
	if err != nil {
		return fmt.Errorf("readmodels: park %s for %s: %w", p.EventID, p.Projection, classify(err))
	}
	return nil
}
