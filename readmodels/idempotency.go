package readmodels

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// IdempotentResponse is what an idempotency key holds: the fingerprint of the
// first request, the session it came with and, once it is Done, the answer
// it got.
type IdempotentResponse struct {
	Fingerprint string
	// Session is the session id of the request that claimed the key: empty
	// for an anonymous request, and on a row kept before sessions were.
	Session string
	Status  int
	// Header is the answer's own headers (ETag, Location, Content-Type…),
	// one value each; nil on a row kept before headers were.
	Header map[string]string
	Body   []byte
	Done   bool
}

// BeginIdempotent claims (scope, key) for a request with the given
// fingerprint, made in session (empty when anonymous). It returns nil when the claim is new: the caller runs the
// request and then calls FinishIdempotent or AbandonIdempotent. When the key
// is already taken it returns what is stored: a Done response to replay, or
// a pending one (the first request is still running). A pending claim older
// than the idempotency lease, for the same fingerprint, is taken over (nil is
// returned): its request died with its process, and the claim passes to
// session. Comparing fingerprints is otherwise the caller's business.
func (s *Store) BeginIdempotent(ctx context.Context, scope, key, fingerprint, session string) (*IdempotentResponse, error) {
	var out *IdempotentResponse
	err := s.Update(ctx, func(tx *Tx) error {
		res, err := tx.q.ExecContext(ctx, `INSERT INTO idempotency_keys (scope, key, fingerprint, session_id, status, created_at, done)
			VALUES ($1, $2, $3, $4, 0, $5, $6) ON CONFLICT (scope, key) DO NOTHING`,
			scope, key, fingerprint, session, micros(tx.now()), false)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return nil
		}
		r, claimed, err := scanIdempotent(tx.q.QueryRowContext(ctx, selectIdempotent, scope, key))
		if err != nil {
			return err
		}
		if !r.Done && r.Fingerprint == fingerprint && fromMicros(claimed).Add(s.idemLease).Before(tx.now()) {
			res, err := tx.q.ExecContext(ctx, `UPDATE idempotency_keys SET created_at = $1, session_id = $2
				WHERE scope = $3 AND key = $4 AND done = $5 AND created_at = $6`,
				micros(tx.now()), session, scope, key, false, claimed)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 1 {
				return err // taken over: out stays nil
			}
		}
		out = &r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("readmodels: begin idempotent %s/%s: %w", scope, key, classify(err))
	}
	return out, nil
}

// LookupIdempotent returns what (scope, key) holds without claiming it: nil
// when the key is free.
func (s *Store) LookupIdempotent(ctx context.Context, scope, key string) (*IdempotentResponse, error) {
	r, _, err := scanIdempotent(s.w.QueryRowContext(ctx, selectIdempotent, scope, key))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("readmodels: look up idempotent %s/%s: %w", scope, key, classify(err))
	}
	return &r, nil
}

const selectIdempotent = `SELECT fingerprint, session_id, status, body, headers, done, created_at
	FROM idempotency_keys WHERE scope = $1 AND key = $2`

// scanIdempotent reads a row of selectIdempotent, and when it was claimed.
func scanIdempotent(row *sql.Row) (IdempotentResponse, int64, error) {
	var (
		r       IdempotentResponse
		header  sql.NullString
		claimed int64
	)
	if err := row.Scan(&r.Fingerprint, &r.Session, &r.Status, &r.Body, &header, &r.Done, &claimed); err != nil {
		return IdempotentResponse{}, 0, err
	}
	if header.Valid && header.String != "" {
		if err := json.Unmarshal([]byte(header.String), &r.Header); err != nil {
			return IdempotentResponse{}, 0, fmt.Errorf("headers: %w", err)
		}
	}
	return r, claimed, nil
}

// FinishIdempotent stores the answer of the request holding (scope, key):
// its status, its own headers and its body. A key that is not pending
// (missing, or finished already) is ErrNotFound.
func (s *Store) FinishIdempotent(ctx context.Context, scope, key string, status int, header map[string]string, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	var headers sql.NullString
	if header != nil {
		b, err := json.Marshal(header)
		if err != nil {
			return fmt.Errorf("readmodels: finish idempotent %s/%s: %w", scope, key, err)
		}
		headers = sql.NullString{String: string(b), Valid: true}
	}
	res, err := s.w.ExecContext(ctx, `UPDATE idempotency_keys SET status = $1, headers = $2, body = $3, done = $4
		WHERE scope = $5 AND key = $6 AND done = $7`, status, headers, body, true, scope, key, false)
	if err != nil {
		return fmt.Errorf("readmodels: finish idempotent %s/%s: %w", scope, key, classify(err))
	}
	return affectedOne(res, fmt.Sprintf("idempotency key %s/%s", scope, key))
}

// AbandonIdempotent frees a pending key after its request failed, so that a
// retry runs again. A finished key is left as it is.
func (s *Store) AbandonIdempotent(ctx context.Context, scope, key string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND done = $3`,
		scope, key, false)
	if err != nil {
		return fmt.Errorf("readmodels: abandon idempotent %s/%s: %w", scope, key, classify(err))
	}
	return nil
}

func affectedOne(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("readmodels: %s: %w", what, classify(err))
	}
	if n == 0 {
		return fmt.Errorf("readmodels: %s: %w", what, ErrNotFound)
	}
	return nil
}

// AbandonPendingIdempotent frees every pending key. Only a process that
// knows no other one is running (the embedded store's lock) may call it, at
// start: every pending claim then belongs to a request that died.
func (s *Store) AbandonPendingIdempotent(ctx context.Context) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE done = $1`, false)
	if err != nil {
		return 0, fmt.Errorf("readmodels: abandon pending idempotency keys: %w", classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("readmodels: abandon pending idempotency keys: %w", classify(err))
	}
	return n, nil
}
