package readmodels

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"evident/eventstore"
)

// Page sizes.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

func pageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

func micros(t time.Time) int64 { return t.UTC().UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func nullMicros(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: micros(*t), Valid: true}
}

func fromNullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func parsePosition(s string) (eventstore.Position, error) {
	p, err := eventstore.ParsePosition(s)
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("readmodels: stored position: %w", classify(err))
	}
	return p, nil
}

// Cursors are opaque to clients: base64url of a few fields joined by "|",
// the first of which names the list they page through (listOf): its
// filters and order. A cursor is only taken by the list that made it;
// handed to another (other filters, the other order) it is ErrBadCursor,
// not the start of a page of something else.
func encodeCursor(list string, fields ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(append([]string{list}, fields...), "|")))
}

// decodeCursor returns the n fields of a cursor list made, or ErrBadCursor.
func decodeCursor(c, list string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
	}
	f := strings.Split(string(b), "|")
	if len(f) != n+1 || f[0] != list {
		return nil, ErrBadCursor
	}
	return f[1:], nil
}

// listOf names a list by what selects and orders it: a short hash, so
// that a cursor carries no filter value.
func listOf(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:6])
}

func cursorInt(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, ErrBadCursor
	}
	return v, nil
}

// args collects query arguments and hands out their $N placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// querier is what reads need from a pool or a transaction.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func checkpoint(ctx context.Context, q querier, name string) (eventstore.Position, error) {
	var s string
	err := q.QueryRowContext(ctx, `SELECT position FROM checkpoints WHERE name = $1`, name).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return eventstore.Position{}, nil
	}
	if err != nil {
		return eventstore.Position{}, fmt.Errorf("readmodels: checkpoint %s: %w", name, classify(err))
	}
	return parsePosition(s)
}
