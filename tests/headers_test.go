package tests

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClientIDsStayBounded: what a client sends in X-Request-Id or
// X-Correlation-ID ends in the metadata of every event its request appends,
// kept forever, and a request method ends in a metric label. Ids that are
// not 1–128 printable ASCII characters are replaced by the server's own,
// and methods HTTP does not define share one label.
func TestClientIDsStayBounded(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	huge := strings.Repeat("r", 100_000)
	for _, h := range [][]string{
		{"X-Request-Id", huge, "X-Correlation-ID", huge},
		{"X-Request-Id", "two words", "X-Correlation-ID", "tab\there"},
		{"X-Request-Id", "caf\xc3\xa9", "X-Correlation-ID", "caf\xc3\xa9"},
	} {
		r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken,
			map[string]any{"email": uniqueEmail(t), "name": "Ids"}, h...)
		require.Equal(t, http.StatusCreated, r.Status, "%s", r)
		rid := r.Header.Get("X-Request-Id")
		assert.NotEqual(t, h[1], rid, "the client's id is not echoed")
		assert.True(t, rid != "" && len(rid) <= 128, "the server made its own id: %q", rid)

		out, err := s.CLI(t, "stream", "user-"+r.JSON(t)["id"].(string))
		require.NoError(t, err)
		lines := streamLines(t, out)
		require.Len(t, lines, 1)
		md := lines[0]["metadata"].(map[string]any)
		assert.Equal(t, rid, md["request_id"])
		assert.Equal(t, rid, md["correlation_id"], "a bad correlation id falls back to the request id")
	}

	r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken,
		map[string]any{"email": uniqueEmail(t), "name": "Ids"}, "X-Request-Id", "client-id-1", "X-Correlation-ID", "corr-1")
	require.Equal(t, http.StatusCreated, r.Status, "%s", r)
	assert.Equal(t, "client-id-1", r.Header.Get("X-Request-Id"), "a good id is kept")

	for _, m := range []string{"PROBE1", "PROBE2", "PROBE3"} {
		s.Do(t, m, "/v1/users", s.AdminToken, nil)
	}
	r = s.Do(t, http.MethodGet, "/metrics", "", nil)
	require.Equal(t, http.StatusOK, r.Status)
	assert.NotContains(t, string(r.Body), `method="PROBE`)
	assert.Contains(t, string(r.Body), `method="other"`)
}
