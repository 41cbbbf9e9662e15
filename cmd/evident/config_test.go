package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Setenv("EVIDENT_HTTP_ADDR", "nonsense")
	t.Setenv("EVIDENT_SESSION_DURATION", "-1s")
	t.Setenv("EVIDENT_PASSWORD_COST", "99")
	t.Setenv("EVIDENT_AUDIT_EVENT_TYPES", "user.created,user.exploded")
	t.Setenv("EVIDENT_BOOTSTRAP_ADMIN_EMAIL", "a@example.org")
	_, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.Error(t, err)
	for _, want := range []string{"EVIDENT_HTTP_ADDR", "EVIDENT_SESSION_DURATION", "EVIDENT_PASSWORD_COST", "user.exploded", "EVIDENT_BOOTSTRAP_ADMIN_PASSWORD"} {
		assert.Contains(t, err.Error(), want)
	}
}

// A zero where the code would put its default instead is refused, not
// silently replaced; and a bootstrap password follows the users' rule.
func TestZeroIsNoSilentDefault(t *testing.T) {
	t.Setenv("EVIDENT_MAX_RETRIES", "0")
	t.Setenv("EVIDENT_READ_WAIT_TIMEOUT", "0s")
	t.Setenv("EVIDENT_BOOTSTRAP_ADMIN_EMAIL", "a@example.org")
	t.Setenv("EVIDENT_BOOTSTRAP_ADMIN_PASSWORD", "ééééééé") // 7 characters, 14 bytes
	_, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.Error(t, err)
	for _, want := range []string{"EVIDENT_MAX_RETRIES must be from 1", "EVIDENT_READ_WAIT_TIMEOUT must be positive", "EVIDENT_BOOTSTRAP_ADMIN_PASSWORD: invalid password"} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestBadDurationStopsStartup(t *testing.T) {
	t.Setenv("EVIDENT_ACTIVATION_TOKEN_DURATION", "thirty seconds")
	_, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "EVIDENT_ACTIVATION_TOKEN_DURATION")
}

func TestConfigFileUnderEnvironmentUnderFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "evident.env")
	require.NoError(t, os.WriteFile(file, []byte(strings.Join([]string{
		"# workflow settings",
		"EVIDENT_ACTIVATION_TOKEN_DURATION=30s",
		"EVIDENT_SESSION_DURATION=\"2h\"",
		"EVIDENT_AUDIT_EVENT_TYPES=user.created,auth.user_logged_in",
		"EVIDENT_AUDIT_ALL_EVENTS=false",
		"EVIDENT_DATA_DIR=/from/file",
	}, "\n")), 0o600))
	t.Setenv("EVIDENT_CONFIG_FILE", file)
	t.Setenv("EVIDENT_SESSION_DURATION", "3h")
	c, err := loadConfig([]string{"--data-dir", "/from/flag"}, flag.NewFlagSet("t", flag.ContinueOnError))
	require.NoError(t, err)
	assert.Equal(t, 30*time.Second, c.ActivationTokenDuration, "from the file")
	assert.Equal(t, 3*time.Hour, c.SessionDuration, "the environment wins over the file")
	assert.Equal(t, "/from/flag", c.DataDir, "a flag wins over both")
	assert.Equal(t, []string{"user.created", "auth.user_logged_in"}, c.AuditEventTypes)
	assert.False(t, c.AuditAllEvents)
}

func TestConfigFileRejectsForeignLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "evident.env")
	require.NoError(t, os.WriteFile(file, []byte("PATH=/tmp\n"), 0o600))
	t.Setenv("EVIDENT_CONFIG_FILE", file)
	_, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.ErrorContains(t, err, "line 1")
}

func TestDefaultsAreValid(t *testing.T) {
	c, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.NoError(t, err)
	assert.Equal(t, "./data", c.DataDir)
	assert.Equal(t, ":8080", c.HTTPAddr)
	assert.True(t, c.EnableSessionCleanup)
	assert.Equal(t, 24*time.Hour, c.SessionDuration)
}

func TestRedactURL(t *testing.T) {
	assert.Equal(t, "postgres://…@db:5432/x", redactURL("postgres://user:secret@db:5432/x"))
	assert.Equal(t, "esdb://node:2113", redactURL("esdb://node:2113"))
}

func TestParseAndRangeProblemsTogether(t *testing.T) {
	t.Setenv("EVIDENT_SESSION_DURATION", "forever")
	t.Setenv("EVIDENT_PASSWORD_COST", "3")
	t.Setenv("EVIDENT_LOG_LEVEL", "loud")
	t.Setenv("EVIDENT_BOOTSTRAP_ADMIN_EMAIL", "a@example.org")
	t.Setenv("EVIDENT_BOOTSTRAP_ADMIN_PASSWORD", "short")
	_, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.Error(t, err)
	for _, want := range []string{"EVIDENT_SESSION_DURATION", "EVIDENT_PASSWORD_COST", "EVIDENT_LOG_LEVEL", "EVIDENT_BOOTSTRAP_ADMIN_PASSWORD"} {
		assert.Contains(t, err.Error(), want)
	}
	// A value that did not parse is named once, for that, and not again
	// as the zero value it was left at.
	assert.Equal(t, 1, strings.Count(err.Error(), "EVIDENT_SESSION_DURATION"), err.Error())
	assert.NotContains(t, err.Error(), "EVIDENT_SESSION_DURATION must be positive")
}

func TestUnknownVariablesAreNamed(t *testing.T) {
	t.Setenv("EVIDENT_SESION_DURATION", "1h")
	t.Setenv("EVIDENT_TEST_STORE", "postgres")
	c, err := loadConfig(nil, flag.NewFlagSet("t", flag.ContinueOnError))
	require.NoError(t, err)
	assert.Equal(t, []string{"EVIDENT_SESION_DURATION"}, c.Unknown)
}
