package readmodels

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Replay writes the batches of a replay (projections.Rebuild): one
// transaction per batch, whose rows a projection has folded in memory and
// writes with one statement per table — an upsert of the rows as one JSON
// argument (putRows), and for the insert-only audit table COPY into a
// shadow table on PostgreSQL. The rows it writes are
// the ones the Tx methods would have written event by event. Build it with
// Store.NewReplay and Close it when done; it is not safe for concurrent use.
type Replay struct {
	s *Store
	// stmts are the statements by text. SQLite prepares them once
	// (on its one write connection); PostgreSQL caches them itself (pgx).
	stmts   map[string]*sql.Stmt
	pending []string           // met in the current transaction, not yet in stmts
	texts   map[textKey]string // statement texts by what they do
	args    []any              // reused between statements
	buf     []byte             // reused between statements
}

type textKey struct {
	table string // as the Tx names it (rel)
	kind  byte   // 'w' write, 'r' read
	col   string // read: the key column
}

// NewReplay returns a Replay on s.
func (s *Store) NewReplay() *Replay {
	return &Replay{s: s, stmts: map[string]*sql.Stmt{}, texts: map[textKey]string{}}
}

// Close releases the prepared statements.
func (r *Replay) Close() error {
	var err error
	for q, st := range r.stmts {
		if cerr := st.Close(); cerr != nil && err == nil {
			err = classify(cerr)
		}
		delete(r.stmts, q)
	}
	return err
}

// Update runs fn in one transaction and commits it when fn returns nil, as
// Store.Update does (same errors); the Bulk's Tx takes checkpoints and
// parked events.
func (r *Replay) Update(ctx context.Context, fn func(*Bulk) error) error {
	var (
		conn  *sql.Conn
		sqlTx *sql.Tx
		err   error
	)
	if r.s.dialect == DialectPostgres {
		// A connection of our own, so that COPY runs in the transaction.
		if conn, err = r.s.write.Conn(ctx); err != nil {
			return &TxError{Op: "begin", Err: err}
		}
		defer conn.Close()
		sqlTx, err = conn.BeginTx(ctx, nil)
		if err == nil {
			// pgx prepares the statements; after a few runs PostgreSQL
			// would plan them once for good, while the shadow tables were
			// nearly empty (a sequential scan), and every batch would then
			// scan them whole: the replay would slow down as it went.
			if _, err = sqlTx.ExecContext(ctx, `SET LOCAL plan_cache_mode = force_custom_plan`); err != nil {
				_ = sqlTx.Rollback()
			}
		}
	} else {
		sqlTx, err = r.s.write.BeginTx(ctx, nil)
	}
	if err != nil {
		return &TxError{Op: "begin", Err: err}
	}
	tx := &Tx{ctx: ctx, tx: sqlTx, q: sqlTx, now: r.s.now, dialect: r.s.dialect}
	if err := fn(&Bulk{r: r, tx: tx, conn: conn, local: map[string]*sql.Stmt{}}); err != nil {
		_ = sqlTx.Rollback() // the error from fn says more than the rollback's
		r.pending = r.pending[:0]
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		r.pending = r.pending[:0]
		return &TxError{Op: "commit", Err: err}
	}
	if tx.checkpointed {
		r.s.broadcast()
	}
	r.prepare(ctx)
	return nil
}

// Bulk is one transaction of a Replay. Its reads and writes go to the
// tables its Tx names (a Shadow's, see Shadow.Bulk).
type Bulk struct {
	r    *Replay
	tx   *Tx
	conn *sql.Conn // PostgreSQL: the transaction's connection, for COPY
	// local are the transaction's statements by text (SQLite).
	local map[string]*sql.Stmt
}

// Tx is the transaction, for checkpoints and parked events.
func (b *Bulk) Tx() *Tx { return b.tx }

// TokenRow is a row of the activation tokens table with the user stream's
// version of the event that last changed it.
type TokenRow struct {
	ActivationToken
	Version int64
}

// text returns (and remembers) the statement text build makes for k.
func (b *Bulk) text(k textKey, build func() string) string {
	if q, ok := b.r.texts[k]; ok {
		return q
	}
	q := build()
	b.r.texts[k] = q
	return q
}

// stmt returns q as a statement of the transaction: on SQLite a prepared
// one, on PostgreSQL nil (pgx prepares and caches statements per
// connection). SQLite's one write connection is the transaction's, so a
// statement met for the first time is prepared in the transaction, and
// again on the pool after the commit (Update), where it outlives it.
func (b *Bulk) stmt(q string) (*sql.Stmt, error) {
	if b.tx.dialect == DialectPostgres {
		return nil, nil
	}
	if st, ok := b.local[q]; ok {
		return st, nil
	}
	var st *sql.Stmt
	if shared, ok := b.r.stmts[q]; ok {
		st = b.tx.tx.StmtContext(b.tx.ctx, shared)
	} else {
		var err error
		if st, err = b.tx.tx.PrepareContext(b.tx.ctx, q); err != nil {
			return nil, err
		}
		b.r.pending = append(b.r.pending, q)
	}
	b.local[q] = st
	return st, nil
}

// prepare prepares the statements met in the last transaction on the pool.
// A failure only means they are prepared in the next transaction again.
func (r *Replay) prepare(ctx context.Context) {
	for _, q := range r.pending {
		if st, err := r.s.write.PrepareContext(ctx, q); err == nil {
			r.stmts[q] = st
		}
	}
	r.pending = r.pending[:0]
}

func (b *Bulk) exec(q string, args []any) error {
	st, err := b.stmt(q)
	if err != nil {
		return err
	}
	if st != nil {
		_, err = st.ExecContext(b.tx.ctx, args...)
		return err
	}
	_, err = b.tx.tx.ExecContext(b.tx.ctx, q, args...)
	return err
}

func (b *Bulk) query(q string, args []any) (*sql.Rows, error) {
	st, err := b.stmt(q)
	if err != nil {
		return nil, err
	}
	if st != nil {
		return st.QueryContext(b.tx.ctx, args...)
	}
	return b.tx.tx.QueryContext(b.tx.ctx, q, args...)
}

// putRows writes n rows with one statement, INSERT INTO table (columns)
// SELECT … suffix, whose one argument is the rows as a JSON array of arrays
// (row appends the values of row i, in columns order, between the brackets;
// types are the columns' SQL types, "" for text). PostgreSQL reads the rows
// with jsonb_array_elements, SQLite with jsonb_each. One argument for a
// whole batch: binding every value, each boxed, was most of a replay's
// allocations, and cost the server a parse and plan per 64 rows.
func (b *Bulk) putRows(table, columns string, types []string, suffix string, n int, row func(buf []byte, i int) []byte) error {
	if n == 0 {
		return nil
	}
	rel := b.tx.rel(table)
	q := b.text(textKey{table: rel, kind: 'w'}, func() string {
		var sb strings.Builder
		sb.WriteString("INSERT INTO " + rel + " (" + columns + ") SELECT ")
		for i, t := range types {
			if i > 0 {
				sb.WriteString(", ")
			}
			if b.tx.dialect == DialectPostgres {
				sb.WriteString("(r->>" + strconv.Itoa(i) + ")")
				if t != "" {
					sb.WriteString("::" + t)
				}
			} else {
				sb.WriteString("value->>" + strconv.Itoa(i))
			}
		}
		if b.tx.dialect == DialectPostgres {
			sb.WriteString(" FROM jsonb_array_elements($1::jsonb) AS r ")
		} else {
			// WHERE true: SQLite would read ON CONFLICT as a join's ON.
			sb.WriteString(" FROM jsonb_each($1) WHERE true ")
		}
		sb.WriteString(suffix)
		return sb.String()
	})
	buf := append(b.r.buf[:0], '[')
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		buf = row(buf, i)
		buf = append(buf, ']')
	}
	buf = append(buf, ']')
	b.r.buf = buf
	// Both drivers copy a text argument while they bind it, and buf is not
	// touched until the statement has run: no copy of the batch on the Go
	// heap is needed. (A []byte would bind as a BLOB on SQLite, which its
	// JSON functions read as JSONB.)
	arg := unsafe.String(unsafe.SliceData(buf), len(buf))
	b.r.args = append(b.r.args[:0], arg)
	err := b.exec(q, b.r.args)
	clear(b.r.args)
	return err
}

// readRows runs SELECT columns FROM table WHERE col IN keys, one statement
// for all keys, and hands each row to scan. The keys are ids, or else strs.
// They go as one text argument: a JSON array on SQLite, an array literal on
// PostgreSQL (a []string cost an allocation per key, and one more per key
// for pgx to encode it).
func (b *Bulk) readRows(table, columns, col string, ids []uuid.UUID, strs []string, scan func(*sql.Rows) error) error {
	if len(ids) == 0 && len(strs) == 0 {
		return nil
	}
	pg := b.tx.dialect == DialectPostgres
	rel := b.tx.rel(table)
	q := b.text(textKey{table: rel, kind: 'r', col: col}, func() string {
		if pg {
			return "SELECT " + columns + " FROM " + rel + " WHERE " + col + " = ANY($1)"
		}
		return "SELECT " + columns + " FROM " + rel + " WHERE " + col + " IN (SELECT value FROM json_each($1))"
	})
	lb, rb := byte('['), byte(']')
	if pg {
		lb, rb = '{', '}'
	}
	buf := append(b.r.buf[:0], lb)
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendUUIDString(buf, id) // nothing to escape in either form
	}
	for i, k := range strs {
		if i > 0 {
			buf = append(buf, ',')
		}
		if pg {
			buf = appendArrayString(buf, k)
		} else {
			buf = appendJSONString(buf, k)
		}
	}
	buf = append(buf, rb)
	b.r.buf = buf
	arg := unsafe.String(unsafe.SliceData(buf), len(buf)) // as in putRows
	b.r.args = append(b.r.args[:0], arg)
	rows, err := b.query(q, b.r.args)
	clear(b.r.args)
	if err != nil {
		return err
	}
	for rows.Next() {
		if err := scan(rows); err != nil {
			rows.Close()
			return err
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	return rows.Err()
}

// JSON values of a row for putRows.

func appendUUIDString(dst []byte, id uuid.UUID) []byte {
	dst = append(dst, '"')
	dst = appendUUID(dst, id)
	return append(dst, '"')
}

func appendInt(dst []byte, v int64) []byte { return strconv.AppendInt(dst, v, 10) }

// appendNullMicros appends t in unix microseconds, or null.
func appendNullMicros(dst []byte, t *time.Time) []byte {
	if t == nil {
		return append(dst, "null"...)
	}
	return appendInt(dst, micros(*t))
}

// appendArrayString appends s as a double-quoted element of a PostgreSQL
// array literal.
func appendArrayString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// Users adds the rows of ids that exist to into.
func (b *Bulk) Users(ids []uuid.UUID, into map[uuid.UUID]User) error {
	err := b.readRows("users", userColumns, "id", ids, nil, func(rows *sql.Rows) error {
		u, err := scanUser(rows)
		if err != nil {
			return err
		}
		into[u.ID] = u
		return nil
	})
	if err != nil {
		return fmt.Errorf("readmodels: read users: %w", classify(err))
	}
	return nil
}

// PutUsers writes users as PutUser does each: inserted, or overwriting a
// row of an older version. Each id at most once.
func (b *Bulk) PutUsers(us []User) error {
	var roles []byte
	err := b.putRows("users", userColumns, userTypes, `ON CONFLICT (id) DO UPDATE SET
			email = excluded.email, name = excluded.name, roles = excluded.roles,
			status = excluded.status, version = excluded.version,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			activated_at = excluded.activated_at, deleted_at = excluded.deleted_at,
			position = excluded.position
		WHERE users.version < excluded.version`, len(us), func(buf []byte, i int) []byte {
		u := &us[i]
		roles = appendRoles(roles[:0], u.Roles)
		buf = appendUUIDString(buf, u.ID)
		for _, v := range [...]string{u.Email, u.Name} {
			buf = append(buf, ',')
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, ',')
		buf = appendJSONString(buf, roles)
		buf = append(buf, ',')
		buf = appendJSONString(buf, u.Status)
		for _, v := range [...]int64{u.Version, micros(u.CreatedAt), micros(u.UpdatedAt)} {
			buf = append(buf, ',')
			buf = appendInt(buf, v)
		}
		for _, t := range [...]*time.Time{u.ActivatedAt, u.DeletedAt} {
			buf = append(buf, ',')
			buf = appendNullMicros(buf, t)
		}
		buf = append(buf, ',', '"')
		buf = strconv.AppendUint(buf, u.Position.Commit, 10)
		if u.Position.Prepare != u.Position.Commit {
			buf = append(buf, '/')
			buf = strconv.AppendUint(buf, u.Position.Prepare, 10)
		}
		return append(buf, '"')
	})
	if err != nil {
		return fmt.Errorf("readmodels: put users: %w", classify(err))
	}
	return nil
}

// The SQL types of userColumns, rawSessionColumns, tokenRowColumns and
// auditColumns for putRows ("" for text).
var (
	userTypes    = []string{"", "", "", "", "", "bigint", "bigint", "bigint", "bigint", "bigint", ""}
	sessionTypes = []string{"", "", "", "bigint", "bigint", "bigint", "", "bigint"}
	tokenTypes   = []string{"", "", "", "", "bigint", "bigint", "bigint", "bigint"}
	auditTypes   = []string{"", "", "", "", "", "", "", "", "", "", "", "bigint", "bigint", "bigint"}
)

// appendRoles appends roles as PutUser stores them (a JSON array, never null).
func appendRoles(dst []byte, roles []string) []byte {
	if roles == nil {
		roles = []string{}
	}
	// Role names are plain; json.Marshal would escape the same way.
	out, err := json.Marshal(roles)
	if err != nil {
		return append(dst, "[]"...) // a []string always marshals
	}
	return append(dst, out...)
}

// Sessions adds the rows of ids that exist to into.
func (b *Bulk) Sessions(ids []uuid.UUID, into map[uuid.UUID]Session) error {
	err := b.readRows("sessions", rawSessionColumns, "id", ids, nil, func(rows *sql.Rows) error {
		s, err := scanSession(rows)
		if err != nil {
			return err
		}
		into[s.ID] = s
		return nil
	})
	if err != nil {
		return fmt.Errorf("readmodels: read sessions: %w", classify(err))
	}
	return nil
}

// PutSessions writes sessions as PutSession does each. Each id at most once.
func (b *Bulk) PutSessions(ss []Session) error {
	err := b.putRows("sessions", rawSessionColumns, sessionTypes, `ON CONFLICT (id) DO UPDATE SET
			user_id = excluded.user_id, status = excluded.status,
			created_at = excluded.created_at, expires_at = excluded.expires_at,
			ended_at = excluded.ended_at, end_reason = excluded.end_reason,
			version = excluded.version
		WHERE sessions.version < excluded.version`, len(ss), func(buf []byte, i int) []byte {
		s := &ss[i]
		buf = appendUUIDString(buf, s.ID)
		buf = append(buf, ',')
		buf = appendUUIDString(buf, s.UserID)
		buf = append(buf, ',')
		buf = appendJSONString(buf, s.Status)
		for _, v := range [...]int64{micros(s.CreatedAt), micros(s.ExpiresAt)} {
			buf = append(buf, ',')
			buf = appendInt(buf, v)
		}
		buf = append(buf, ',')
		buf = appendNullMicros(buf, s.EndedAt)
		buf = append(buf, ',')
		buf = appendJSONString(buf, s.EndReason)
		buf = append(buf, ',')
		return appendInt(buf, s.Version)
	})
	if err != nil {
		return fmt.Errorf("readmodels: put sessions: %w", classify(err))
	}
	return nil
}

const tokenRowColumns = `token_hash, user_id, status, requested_by, created_at, expires_at, ended_at, version`

// ActivationTokens adds to into the tokens of the users userIDs and the
// tokens hashes, those that exist.
func (b *Bulk) ActivationTokens(userIDs []uuid.UUID, hashes []string, into map[string]TokenRow) error {
	scan := func(rows *sql.Rows) error {
		var (
			t                TokenRow
			userID           string
			created, expires int64
			ended            sql.NullInt64
		)
		if err := rows.Scan(&t.TokenHash, &userID, &t.Status, &t.RequestedBy, &created, &expires, &ended, &t.Version); err != nil {
			return err
		}
		var err error
		if t.UserID, err = uuid.Parse(userID); err != nil {
			return fmt.Errorf("token user id %q: %w", userID, err)
		}
		t.CreatedAt, t.ExpiresAt, t.EndedAt = fromMicros(created), fromMicros(expires), fromNullMicros(ended)
		into[t.TokenHash] = t
		return nil
	}
	err := b.readRows("activation_tokens", tokenRowColumns, "user_id", userIDs, nil, scan)
	if err == nil {
		err = b.readRows("activation_tokens", tokenRowColumns, "token_hash", nil, hashes, scan)
	}
	if err != nil {
		return fmt.Errorf("readmodels: read activation tokens: %w", classify(err))
	}
	return nil
}

// PutActivationTokens writes tokens: inserted, or overwriting a row of an
// older version. Each hash at most once.
func (b *Bulk) PutActivationTokens(ts []TokenRow) error {
	err := b.putRows("activation_tokens", tokenRowColumns, tokenTypes, `ON CONFLICT (token_hash) DO UPDATE SET
			user_id = excluded.user_id, status = excluded.status, requested_by = excluded.requested_by,
			created_at = excluded.created_at, expires_at = excluded.expires_at,
			ended_at = excluded.ended_at, version = excluded.version
		WHERE activation_tokens.version < excluded.version`, len(ts), func(buf []byte, i int) []byte {
		t := &ts[i]
		buf = appendJSONString(buf, t.TokenHash)
		buf = append(buf, ',')
		buf = appendUUIDString(buf, t.UserID)
		for _, v := range [...]string{t.Status, t.RequestedBy} {
			buf = append(buf, ',')
			buf = appendJSONString(buf, v)
		}
		for _, v := range [...]int64{micros(t.CreatedAt), micros(t.ExpiresAt)} {
			buf = append(buf, ',')
			buf = appendInt(buf, v)
		}
		buf = append(buf, ',')
		buf = appendNullMicros(buf, t.EndedAt)
		buf = append(buf, ',')
		return appendInt(buf, t.Version)
	})
	if err != nil {
		return fmt.Errorf("readmodels: put activation tokens: %w", classify(err))
	}
	return nil
}

// auditCopy makes the rows of a COPY of audit records. COPY encodes a row
// before it asks for the next, so one row's values are rewritten for the
// next: ids holds the text of the event's and the user's ids, and eventID
// and userID are those arrays as values. Data and metadata go as the bytes
// they are. The few distinct event types, actions, aggregate types and
// resources are boxed once each (boxing a string allocates).
type auditCopy struct {
	row             []any
	ids             [2][36]byte
	eventID, userID any
	boxed           []any // of strings
}

func newAuditCopy() *auditCopy {
	c := &auditCopy{row: make([]any, 0, len(auditColumnNames))}
	c.eventID, c.userID = c.ids[0][:], c.ids[1][:]
	return c
}

// box returns s as a value, boxed once while few values are seen.
func (c *auditCopy) box(s string) any {
	for _, v := range c.boxed {
		if v.(string) == s {
			return v
		}
	}
	v := any(s)
	if len(c.boxed) < 32 {
		c.boxed = append(c.boxed, v)
	}
	return v
}

// values returns the column values (auditColumnNames) of r as InsertAudit
// writes them, valid until the next call.
func (c *auditCopy) values(r *AuditRecord) []any {
	appendUUID(c.ids[0][:0], r.EventID)
	userID := c.userID
	if r.UserID != nil {
		appendUUID(c.ids[1][:0], *r.UserID)
	} else {
		userID = nil
	}
	var details, meta any = emptyJSON, emptyJSON
	if len(r.Details) > 0 {
		details = []byte(r.Details)
	}
	if len(r.Metadata) > 0 {
		meta = []byte(r.Metadata)
	}
	agg := any(r.AggregateID)
	res := agg
	if r.ResourceID != r.AggregateID {
		res = r.ResourceID
	}
	clear(c.row)
	c.row = append(c.row[:0], c.eventID, c.box(r.EventType), agg, c.box(r.AggregateType), userID, r.ActorID, c.box(r.Action),
		c.box(r.Resource), res, details, meta, micros(r.OccurredAt),
		int64(r.Position.Commit), int64(r.Position.Prepare))
	return c.row
}

// emptyJSON is what an audit row holds for absent details or metadata.
const emptyJSON = "{}"

var auditColumnNames = []string{"event_id", "event_type", "aggregate_id", "aggregate_type", "user_id", "actor_id", "action",
	"resource", "resource_id", "details", "metadata", "occurred_at", "pos_commit", "pos_prepare"}

// InsertAudit adds audit records as InsertAudit does each. Into a shadow
// table on PostgreSQL it copies them (COPY), which fails on a record already
// there (same event id or position) rather than leaving it out.
func (b *Bulk) InsertAudit(rs []AuditRecord) error {
	if len(rs) == 0 {
		return nil
	}
	if shadow, ok := b.tx.shadows["audit"]; ok && b.conn != nil {
		if err := b.copyAudit(shadow, rs); err != nil {
			return fmt.Errorf("readmodels: copy audit: %w", classify(err))
		}
		return nil
	}
	err := b.putRows("audit", auditColumns, auditTypes, `ON CONFLICT DO NOTHING`, len(rs), func(buf []byte, i int) []byte {
		return appendAuditRow(buf, &rs[i])
	})
	if err != nil {
		return fmt.Errorf("readmodels: insert audit: %w", classify(err))
	}
	return nil
}

func (b *Bulk) copyAudit(table string, rs []AuditRecord) error {
	return b.conn.Raw(func(dc any) error {
		c, err := pgxConn(dc)
		if err != nil {
			return err
		}
		ac := newAuditCopy()
		_, err = c.CopyFrom(b.tx.ctx, pgx.Identifier{table}, auditColumnNames,
			pgx.CopyFromFunc(func() ([]any, error) {
				if len(rs) == 0 {
					return nil, nil
				}
				row := ac.values(&rs[0])
				rs = rs[1:]
				return row, nil
			}))
		return err
	})
}

// appendAuditRow appends the JSON values (auditColumns) of r as InsertAudit
// writes them.
func appendAuditRow(buf []byte, r *AuditRecord) []byte {
	buf = appendUUIDString(buf, r.EventID)
	for _, v := range [...]string{r.EventType, r.AggregateID, r.AggregateType} {
		buf = append(buf, ',')
		buf = appendJSONString(buf, v)
	}
	buf = append(buf, ',')
	if r.UserID != nil {
		buf = appendUUIDString(buf, *r.UserID)
	} else {
		buf = append(buf, "null"...)
	}
	for _, v := range [...]string{r.ActorID, r.Action, r.Resource, r.ResourceID} {
		buf = append(buf, ',')
		buf = appendJSONString(buf, v)
	}
	for _, v := range [...][]byte{r.Details, r.Metadata} {
		buf = append(buf, ',')
		if len(v) == 0 {
			buf = append(buf, `"{}"`...)
		} else {
			buf = appendJSONString(buf, v)
		}
	}
	for _, v := range [...]int64{micros(r.OccurredAt), int64(r.Position.Commit), int64(r.Position.Prepare)} {
		buf = append(buf, ',')
		buf = appendInt(buf, v)
	}
	return buf
}

// appendUUID appends id in its canonical text form, as uuid.UUID.String.
func appendUUID(dst []byte, id uuid.UUID) []byte {
	var t [36]byte
	hex.Encode(t[0:8], id[0:4])
	t[8] = '-'
	hex.Encode(t[9:13], id[4:6])
	t[13] = '-'
	hex.Encode(t[14:18], id[6:8])
	t[18] = '-'
	hex.Encode(t[19:23], id[8:10])
	t[23] = '-'
	hex.Encode(t[24:], id[10:])
	return append(dst, t[:]...)
}

// appendJSONString appends s as a JSON string that reads back as exactly s:
// quotes, backslashes and control characters escaped, every other byte as
// it is.
func appendJSONString[T string | []byte](dst []byte, s T) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
