package readmodels

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
