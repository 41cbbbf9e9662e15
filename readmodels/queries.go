package readmodels

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"evident/eventstore"

	"github.com/google/uuid"
)

type scanner interface{ Scan(dest ...any) error }

const userColumns = `id, email, name, roles, status, version, created_at, updated_at, activated_at, deleted_at, position`

func scanUser(r scanner) (User, error) {
	var (
		u                    User
		id, roles, pos       string
		created, updated     int64
		activated, deletedAt sql.NullInt64
	)
	if err := r.Scan(&id, &u.Email, &u.Name, &roles, &u.Status, &u.Version, &created, &updated, &activated, &deletedAt, &pos); err != nil {
		return User{}, err
	}
	var err error
	if u.ID, err = uuid.Parse(id); err != nil {
		return User{}, fmt.Errorf("readmodels: user id %q: %w", id, classify(err))
	}
	if err := json.Unmarshal([]byte(roles), &u.Roles); err != nil {
		return User{}, fmt.Errorf("readmodels: user %s roles: %w", id, classify(err))
	}
	if u.Roles == nil {
		u.Roles = []string{}
	}
	u.CreatedAt, u.UpdatedAt = fromMicros(created), fromMicros(updated)
	u.ActivatedAt, u.DeletedAt = fromNullMicros(activated), fromNullMicros(deletedAt)
	if u.Position, err = parsePosition(pos); err != nil {
		return User{}, err
	}
	return u, nil
}

// getUser reads a user from table, which is "users" or a Tx's rel("users").
func getUser(ctx context.Context, q querier, table string, id uuid.UUID) (User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM `+table+` WHERE id = $1`, id.String()))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("readmodels: user %s: %w", id, classify(err))
	}
	return u, nil
}

// User returns one user, deleted ones included (status "deleted"), or ErrNotFound.
func (s *Store) User(ctx context.Context, id uuid.UUID) (User, error) {
	return getUser(ctx, s.r, "users", id)
}

// Users lists users by id, filtered by status and exact (normalised) e-mail.
// A malformed cursor is ErrBadCursor.
func (s *Store) Users(ctx context.Context, f UserFilter) (Page[User], error) {
	limit := pageLimit(f.Limit)
	var (
		a     args
		where []string
	)
	if f.Status != "" {
		where = append(where, "status = "+a.add(f.Status))
	}
	if f.Email != "" {
		where = append(where, "email = "+a.add(f.Email))
	}
	list := listOf("users", f.Status, f.Email)
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor, list, 1)
		if err != nil {
			return Page[User]{}, err
		}
		if _, err := uuid.Parse(c[0]); err != nil {
			return Page[User]{}, ErrBadCursor
		}
		where = append(where, "id > "+a.add(c[0]))
	}
	q := `SELECT ` + userColumns + ` FROM users` + whereClause(where) + ` ORDER BY id LIMIT ` + a.add(limit+1)
	rows, err := s.r.QueryContext(ctx, q, a...)
	if err != nil {
		return Page[User]{}, fmt.Errorf("readmodels: users: %w", classify(err))
	}
	defer rows.Close()
	items := []User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return Page[User]{}, fmt.Errorf("readmodels: users: %w", classify(err))
		}
		items = append(items, u)
	}
	if err := rows.Err(); err != nil {
		return Page[User]{}, fmt.Errorf("readmodels: users: %w", classify(err))
	}
	page := Page[User]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		page.NextCursor = encodeCursor(list, items[limit-1].ID.String())
	}
	return page, nil
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// sessionColumns shows an open session past its expiry as expired: the
// workflow that records the expiry may lag, the answer must not.
func sessionColumns(a *args, now time.Time) string {
	n := a.add(micros(now))
	return `id, user_id,
		CASE WHEN status = 'open' AND expires_at <= ` + n + ` THEN 'expired' ELSE status END,
		created_at, expires_at,
		CASE WHEN status = 'open' AND expires_at <= ` + n + ` THEN expires_at ELSE ended_at END,
		CASE WHEN status = 'open' AND expires_at <= ` + n + ` THEN 'expired' ELSE end_reason END,
		version`
}

const rawSessionColumns = `id, user_id, status, created_at, expires_at, ended_at, end_reason, version`

func scanSession(r scanner) (Session, error) {
	var (
		s                Session
		id, userID       string
		created, expires int64
		ended            sql.NullInt64
	)
	if err := r.Scan(&id, &userID, &s.Status, &created, &expires, &ended, &s.EndReason, &s.Version); err != nil {
		return Session{}, err
	}
	var err error
	if s.ID, err = uuid.Parse(id); err != nil {
		return Session{}, fmt.Errorf("readmodels: session id %q: %w", id, classify(err))
	}
	if s.UserID, err = uuid.Parse(userID); err != nil {
		return Session{}, fmt.Errorf("readmodels: session %s user id: %w", id, classify(err))
	}
	s.CreatedAt, s.ExpiresAt, s.EndedAt = fromMicros(created), fromMicros(expires), fromNullMicros(ended)
	return s, nil
}

func scanSessions(rows *sql.Rows, err error) ([]Session, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Session{}
	for rows.Next() {
		s, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Sessions lists a user's sessions, newest first. A session that is open but
// past its expiry is shown as expired. status, when not empty, keeps the
// sessions in that status as they read now: open (and not past expiry),
// expired (recorded, or open past expiry), logged_out or revoked. A
// malformed cursor is ErrBadCursor.
func (s *Store) Sessions(ctx context.Context, userID uuid.UUID, status, cursor string, limit int) (Page[Session], error) {
	limit = pageLimit(limit)
	now := s.now()
	var a args
	cols := sessionColumns(&a, now)
	where := []string{"user_id = " + a.add(userID.String())}
	switch status {
	case "":
	case "open":
		where = append(where, "status = 'open'", "expires_at > "+a.add(micros(now)))
	case "expired":
		where = append(where, "(status = 'expired' OR (status = 'open' AND expires_at <= "+a.add(micros(now))+"))")
	case "logged_out", "revoked":
		where = append(where, "status = "+a.add(status))
	default:
		return Page[Session]{}, fmt.Errorf("readmodels: no session status %q", status)
	}
	list := listOf("sessions", userID.String(), status)
	if cursor != "" {
		c, err := decodeCursor(cursor, list, 2)
		if err != nil {
			return Page[Session]{}, err
		}
		at, err := cursorInt(c[0])
		if err != nil {
			return Page[Session]{}, err
		}
		if _, err := uuid.Parse(c[1]); err != nil {
			return Page[Session]{}, ErrBadCursor
		}
		where = append(where, "(created_at, id) < ("+a.add(at)+", "+a.add(c[1])+")")
	}
	q := `SELECT ` + cols + ` FROM sessions` + whereClause(where) +
		` ORDER BY created_at DESC, id DESC LIMIT ` + a.add(limit+1)
	items, err := scanSessions(s.r.QueryContext(ctx, q, a...))
	if err != nil {
		return Page[Session]{}, fmt.Errorf("readmodels: sessions of %s: %w", userID, classify(err))
	}
	page := Page[Session]{Items: items}
	if len(items) > limit {
		last := items[limit-1]
		page.Items = items[:limit]
		page.NextCursor = encodeCursor(list, strconv.FormatInt(micros(last.CreatedAt), 10), last.ID.String())
	}
	return page, nil
}

// OpenSessionIDs returns the ids of every session of the user whose status is
// open, past expiry or not: the sessions a deactivation must revoke.
func (s *Store) OpenSessionIDs(ctx context.Context, userID uuid.UUID) ([]uuid.UUID, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT id FROM sessions WHERE user_id = $1 AND status = 'open' ORDER BY created_at, id`, userID.String())
	if err != nil {
		return nil, fmt.Errorf("readmodels: open sessions of %s: %w", userID, classify(err))
	}
	defer rows.Close()
	var out []uuid.UUID
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("readmodels: open sessions of %s: %w", userID, classify(err))
		}
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("readmodels: session id %q: %w", id, classify(err))
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("readmodels: open sessions of %s: %w", userID, classify(err))
	}
	return out, nil
}

// DueSessions returns up to limit sessions that are open with expires_at <=
// now, earliest expiry first: the ones the expiry workflow must close.
func (s *Store) DueSessions(ctx context.Context, now time.Time, limit int) ([]Session, error) {
	out, err := scanSessions(s.r.QueryContext(ctx, `SELECT `+rawSessionColumns+` FROM sessions
		WHERE status = 'open' AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2`, micros(now), pageLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("readmodels: due sessions: %w", classify(err))
	}
	return out, nil
}

const tokenColumns = `token_hash, user_id, status, requested_by, created_at, expires_at, ended_at`

func scanTokens(rows *sql.Rows, err error) ([]ActivationToken, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ActivationToken{}
	for rows.Next() {
		var (
			at               ActivationToken
			userID           string
			created, expires int64
			ended            sql.NullInt64
		)
		if err := rows.Scan(&at.TokenHash, &userID, &at.Status, &at.RequestedBy, &created, &expires, &ended); err != nil {
			return nil, err
		}
		if at.UserID, err = uuid.Parse(userID); err != nil {
			return nil, fmt.Errorf("token user id %q: %w", userID, err)
		}
		at.CreatedAt, at.ExpiresAt, at.EndedAt = fromMicros(created), fromMicros(expires), fromNullMicros(ended)
		out = append(out, at)
	}
	return out, rows.Err()
}

// ActivationTokens lists a user's activation tokens (hashes only), newest
// first. A malformed cursor is ErrBadCursor.
func (s *Store) ActivationTokens(ctx context.Context, userID uuid.UUID, cursor string, limit int) (Page[ActivationToken], error) {
	limit = pageLimit(limit)
	var a args
	where := []string{"user_id = " + a.add(userID.String())}
	list := listOf("activation_tokens", userID.String())
	if cursor != "" {
		c, err := decodeCursor(cursor, list, 2)
		if err != nil {
			return Page[ActivationToken]{}, err
		}
		at, err := cursorInt(c[0])
		if err != nil {
			return Page[ActivationToken]{}, err
		}
		where = append(where, "(created_at, token_hash) < ("+a.add(at)+", "+a.add(c[1])+")")
	}
	q := `SELECT ` + tokenColumns + ` FROM activation_tokens` + whereClause(where) +
		` ORDER BY created_at DESC, token_hash DESC LIMIT ` + a.add(limit+1)
	items, err := scanTokens(s.r.QueryContext(ctx, q, a...))
	if err != nil {
		return Page[ActivationToken]{}, fmt.Errorf("readmodels: activation tokens of %s: %w", userID, classify(err))
	}
	page := Page[ActivationToken]{Items: items}
	if len(items) > limit {
		last := items[limit-1]
		page.Items = items[:limit]
		page.NextCursor = encodeCursor(list, strconv.FormatInt(micros(last.CreatedAt), 10), last.TokenHash)
	}
	return page, nil
}

// DueActivationTokens returns up to limit pending tokens with expires_at <=
// now, earliest expiry first.
func (s *Store) DueActivationTokens(ctx context.Context, now time.Time, limit int) ([]ActivationToken, error) {
	out, err := scanTokens(s.r.QueryContext(ctx, `SELECT `+tokenColumns+` FROM activation_tokens
		WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at, token_hash LIMIT $2`, micros(now), pageLimit(limit)))
	if err != nil {
		return nil, fmt.Errorf("readmodels: due activation tokens: %w", classify(err))
	}
	return out, nil
}

// NextDue returns the earliest expires_at among open sessions and pending
// activation tokens; false when there is none.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	var sess, tok sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT
		(SELECT MIN(expires_at) FROM sessions WHERE status = 'open'),
		(SELECT MIN(expires_at) FROM activation_tokens WHERE status = 'pending')`).Scan(&sess, &tok)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("readmodels: next due: %w", classify(err))
	}
	switch {
	case sess.Valid && tok.Valid:
		return fromMicros(min(sess.Int64, tok.Int64)), true, nil
	case sess.Valid:
		return fromMicros(sess.Int64), true, nil
	case tok.Valid:
		return fromMicros(tok.Int64), true, nil
	}
	return time.Time{}, false, nil
}

const auditColumns = `event_id, event_type, aggregate_id, aggregate_type, user_id, actor_id, action,
	resource, resource_id, details, metadata, occurred_at, pos_commit, pos_prepare`

func scanAudit(r scanner) (AuditRecord, error) {
	var (
		a                         AuditRecord
		eventID, details, meta    string
		userID                    sql.NullString
		occurred, commit, prepare int64
	)
	if err := r.Scan(&eventID, &a.EventType, &a.AggregateID, &a.AggregateType, &userID, &a.ActorID, &a.Action,
		&a.Resource, &a.ResourceID, &details, &meta, &occurred, &commit, &prepare); err != nil {
		return AuditRecord{}, err
	}
	var err error
	if a.EventID, err = uuid.Parse(eventID); err != nil {
		return AuditRecord{}, fmt.Errorf("readmodels: audit event id %q: %w", eventID, classify(err))
	}
	if userID.Valid {
		u, err := uuid.Parse(userID.String)
		if err != nil {
			return AuditRecord{}, fmt.Errorf("readmodels: audit %s user id: %w", eventID, classify(err))
		}
		a.UserID = &u
	}
	a.Details, a.Metadata = json.RawMessage(details), json.RawMessage(meta)
	a.OccurredAt = fromMicros(occurred)
	a.Position = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
	return a, nil
}

// Audit lists audit records in log order (Desc: newest first), filtered by
// user, actor, action and occurred_at (From inclusive, To exclusive). The
// cursor is a keyset on the position. A malformed cursor is ErrBadCursor.
func (s *Store) Audit(ctx context.Context, f AuditFilter) (Page[AuditRecord], error) {
	limit := pageLimit(f.Limit)
	var (
		a     args
		where []string
	)
	if f.UserID != nil {
		where = append(where, "user_id = "+a.add(f.UserID.String()))
	}
	if f.ActorID != "" {
		where = append(where, "actor_id = "+a.add(f.ActorID))
	}
	if f.Action != "" {
		where = append(where, "action = "+a.add(f.Action))
	}
	if !f.From.IsZero() {
		where = append(where, "occurred_at >= "+a.add(micros(f.From)))
	}
	if !f.To.IsZero() {
		where = append(where, "occurred_at < "+a.add(micros(f.To)))
	}
	op, dir := ">", "ASC"
	if f.Desc {
		op, dir = "<", "DESC"
	}
	user := ""
	if f.UserID != nil {
		user = f.UserID.String()
	}
	list := listOf("audit", user, f.ActorID, f.Action, strconv.FormatInt(micros(f.From), 10), strconv.FormatInt(micros(f.To), 10), dir)
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor, list, 1)
		if err != nil {
			return Page[AuditRecord]{}, err
		}
		p, err := eventstore.ParsePosition(c[0])
		if err != nil {
			return Page[AuditRecord]{}, ErrBadCursor
		}
		where = append(where, "(pos_commit, pos_prepare) "+op+" ("+a.add(int64(p.Commit))+", "+a.add(int64(p.Prepare))+")")
	}
	q := `SELECT ` + auditColumns + ` FROM audit` + whereClause(where) +
		` ORDER BY pos_commit ` + dir + `, pos_prepare ` + dir + ` LIMIT ` + a.add(limit+1)
	rows, err := s.r.QueryContext(ctx, q, a...)
	if err != nil {
		return Page[AuditRecord]{}, fmt.Errorf("readmodels: audit: %w", classify(err))
	}
	defer rows.Close()
	items := []AuditRecord{}
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return Page[AuditRecord]{}, fmt.Errorf("readmodels: audit: %w", classify(err))
		}
		items = append(items, r)
	}
	if err := rows.Err(); err != nil {
		return Page[AuditRecord]{}, fmt.Errorf("readmodels: audit: %w", classify(err))
	}
	page := Page[AuditRecord]{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		page.NextCursor = encodeCursor(list, items[limit-1].Position.String())
	}
	return page, nil
}
