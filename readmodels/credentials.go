package readmodels

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/google/uuid"
)

// PutCredential stores a password hash under a new credential id. The log
// refers to the credential by id only, so hashes never enter it. Storing the
// same id and hash again is a no-op; the same id with another hash is
// ErrConflict (credentials are immutable: a new password gets a new id).
func (s *Store) PutCredential(ctx context.Context, id, userID uuid.UUID, hash string) error {
	res, err := s.w.ExecContext(ctx, `INSERT INTO credentials (id, user_id, password_hash, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING`,
		id.String(), userID.String(), hash, micros(s.now()))
	if err != nil {
		return fmt.Errorf("readmodels: put credential %s: %w", id, classify(err))
	}
	if n, err := res.RowsAffected(); err == nil && n == 1 {
		return nil
	}
	var have, owner string
	err = s.w.QueryRowContext(ctx, `SELECT password_hash, user_id FROM credentials WHERE id = $1`, id.String()).Scan(&have, &owner)
	if err != nil {
		return fmt.Errorf("readmodels: put credential %s: %w", id, classify(err))
	}
	if have != hash || owner != userID.String() {
		return fmt.Errorf("readmodels: credential %s exists: %w", id, ErrConflict)
	}
	return nil
}

// Credential returns the password hash of a credential id, or ErrNotFound.
func (s *Store) Credential(ctx context.Context, id uuid.UUID) (string, error) {
	var hash string
	err := s.r.QueryRowContext(ctx, `SELECT password_hash FROM credentials WHERE id = $1`, id.String()).Scan(&hash)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("readmodels: credential %s: %w", id, classify(err))
	}
	return hash, nil
}
