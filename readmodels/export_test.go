package readmodels

// Setting reads a server setting inside the transaction, for tests.
func (t *Tx) Setting(name string) (string, error) {
	var v string
	err := t.tx.QueryRowContext(t.ctx, `SELECT current_setting($1)`, name).Scan(&v)
	return v, err
}
