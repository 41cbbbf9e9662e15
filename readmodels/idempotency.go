package readmodels

import (
	"context"
	"database/sql"
	"fmt"
)

// IdempotentResponse is what an idempotency key holds: the fingerprint of the
// first request and, once it is Done, the answer it got.
type IdempotentResponse struct {
	Fingerprint string
	Status      int
	Body        []byte
	Done        bool
}

// BeginIdempotent claims (scope, key) for a request with the given
// fingerprint. It returns nil when the claim is new: the caller runs the
// request and then calls FinishIdempotent or AbandonIdempotent. When the key
// is already taken it returns what is stored: a Done response to replay, or
// a pending one (the first request is still running). A pending claim older
// than the idempotency lease, for the same fingerprint, is taken over (nil is
// returned): its request died with its process. Comparing fingerprints is
// otherwise the caller's business.
func (s *Store) BeginIdempotent(ctx context.Context, scope, key, fingerprint string) (*IdempotentResponse, error) {
	var out *IdempotentResponse
	err := s.Update(ctx, func(tx *Tx) error {
		res, err := tx.q.ExecContext(ctx, `INSERT INTO idempotency_keys (scope, key, fingerprint, status, created_at, done)
			VALUES ($1, $2, $3, 0, $4, $5) ON CONFLICT (scope, key) DO NOTHING`,
			scope, key, fingerprint, micros(tx.now()), false)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return nil
		}
		var (
			r       IdempotentResponse
			claimed int64
		)
		err = tx.q.QueryRowContext(ctx, `SELECT fingerprint, status, body, done, created_at FROM idempotency_keys
			WHERE scope = $1 AND key = $2`, scope, key).Scan(&r.Fingerprint, &r.Status, &r.Body, &r.Done, &claimed)
		if err != nil {
			return err
		}
		if !r.Done && r.Fingerprint == fingerprint && fromMicros(claimed).Add(s.idemLease).Before(tx.now()) {
			res, err := tx.q.ExecContext(ctx, `UPDATE idempotency_keys SET created_at = $1
				WHERE scope = $2 AND key = $3 AND done = $4 AND created_at = $5`,
				micros(tx.now()), scope, key, false, claimed)
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

// FinishIdempotent stores the answer of the request holding (scope, key).
// A key that is not pending (missing, or finished already) is ErrNotFound.
func (s *Store) FinishIdempotent(ctx context.Context, scope, key string, status int, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	res, err := s.w.ExecContext(ctx, `UPDATE idempotency_keys SET status = $1, body = $2, done = $3
		WHERE scope = $4 AND key = $5 AND done = $6`, status, body, true, scope, key, false)
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
