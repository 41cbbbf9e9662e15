package pgtest_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/internal/pgtest"
)

func TestURLGivesAnIsolatedSchema(t *testing.T) {
	a, b := pgtest.URL(t), pgtest.URL(t)
	require.NotEqual(t, a, b)

	ctx := context.Background()
	ca, err := pgx.Connect(ctx, a)
	require.NoError(t, err)
	defer ca.Close(ctx)
	cb, err := pgx.Connect(ctx, b)
	require.NoError(t, err)
	defer cb.Close(ctx)

	var sa, sb string
	require.NoError(t, ca.QueryRow(ctx, "SELECT current_schema()").Scan(&sa))
	require.NoError(t, cb.QueryRow(ctx, "SELECT current_schema()").Scan(&sb))
	assert.NotEqual(t, sa, sb)

	_, err = ca.Exec(ctx, "CREATE TABLE things (id int)")
	require.NoError(t, err)
	_, err = cb.Exec(ctx, "SELECT 1 FROM things")
	assert.Error(t, err, "a table in one schema must not be visible from another")
}
