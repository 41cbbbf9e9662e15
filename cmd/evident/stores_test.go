package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/internal/pgtest"
)

// A URL without pool_max_conns gets a pool large enough for the listeners,
// the notifier and the lease connection beside the work; one that sets it
// keeps its own size.
func TestPoolSize(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	p, err := pool(t.Context(), url)
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, int32(defaultPoolConns), p.Config().MaxConns)

	sep := "&"
	if !strings.Contains(url, "?") {
		sep = "?"
	}
	q, err := pool(t.Context(), url+sep+"pool_max_conns=3")
	require.NoError(t, err)
	defer q.Close()
	assert.Equal(t, int32(3), q.Config().MaxConns)
}

// The start-up log names where the events are even when one URL holds both.
func TestStoreNameNamesBothStores(t *testing.T) {
	c := Config{DatabaseURL: "postgres://evident:secret@db:5432/evident"}
	name := c.storeName()
	assert.Contains(t, name, "events=postgres://…@db:5432/evident")
	assert.Contains(t, name, "read_models=postgres://…@db:5432/evident")
	assert.NotContains(t, name, "secret")
}
