package pgtest

import "testing"

// EachDialect runs test once per read-model database, "sqlite" and
// "postgres", in parallel subtests. The PostgreSQL case skips (or fails)
// as URL does when no server is configured.
func EachDialect(t *testing.T, test func(t *testing.T, dialect string)) {
	t.Helper()
	t.Parallel()
	for _, d := range []string{"sqlite", "postgres"} {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			test(t, d)
		})
	}
}
