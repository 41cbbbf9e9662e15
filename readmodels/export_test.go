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
