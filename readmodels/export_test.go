package readmodels

import (
	"context"
	"fmt"
	"strings"
)

// MigrationBefore is the schema version just before the migration whose
// file name ends in name, whatever number each dialect gave it.
func (s *Store) MigrationBefore(name string) (int64, error) {
	p, err := s.migrations()
	if err != nil {
		return 0, err
	}
	var prev int64
	for _, src := range p.ListSources() {
		if strings.HasSuffix(src.Path, name) {
			return prev, nil
		}
		prev = src.Version
	}
	return 0, fmt.Errorf("no migration %s", name)
}

// MigrateTo brings the schema up or down to version, for tests of what a
// migration does to rows kept before it.
func (s *Store) MigrateTo(ctx context.Context, version int64) error {
	p, err := s.migrations()
	if err != nil {
		return err
	}
	cur, err := p.GetDBVersion(ctx)
	if err != nil {
		return err
	}
	if version < cur {
		_, err = p.DownTo(ctx, version)
	} else {
		_, err = p.UpTo(ctx, version)
	}
	return err
}

// Exec runs one statement on the write pool, for tests that must write what
// no method writes any more.
func (s *Store) Exec(ctx context.Context, q string, args ...any) error {
	_, err := s.write.ExecContext(ctx, q, args...)
	return err
}

// Setting reads a server setting inside the transaction, for tests.
func (t *Tx) Setting(name string) (string, error) {
	q, err := t.reader()
	if err != nil {
		return "", err
	}
	var v string
	err = q.QueryRowContext(t.ctx, `SELECT current_setting($1)`, name).Scan(&v)
	return v, err
}

// Pragma reads a SQLite pragma inside the transaction, for tests.
func (t *Tx) Pragma(name string) (int, error) {
	var v int
	err := t.tx.QueryRowContext(t.ctx, `PRAGMA `+name).Scan(&v)
	return v, err
}

// Prepared counts the statements the Store prepared on SQLite, on the write
// side (pool and transactions) and on the read pool.
func (s *Store) Prepared() (write, read int) {
	s.wc.mu.Lock()
	write = s.wc.prepared
	s.wc.mu.Unlock()
	s.rc.mu.Lock()
	read = s.rc.prepared
	s.rc.mu.Unlock()
	return write, read
}
