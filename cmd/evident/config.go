package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore/kurrentdb"
	"evident/projections"

	"github.com/caarlos0/env/v11"
	"golang.org/x/crypto/bcrypt"
)

// Config is every setting Evident reads, from the environment only here.
type Config struct {
	DataDir       string `env:"EVIDENT_DATA_DIR" envDefault:"./data"`
	HTTPAddr      string `env:"EVIDENT_HTTP_ADDR" envDefault:":8080"`
	EventStoreURL string `env:"EVIDENT_EVENTSTORE_URL"`
	AMQPURL       string `env:"EVIDENT_AMQP_URL"`
	DatabaseURL   string `env:"EVIDENT_DATABASE_URL"`

	BootstrapAdminEmail    string `env:"EVIDENT_BOOTSTRAP_ADMIN_EMAIL"`
	BootstrapAdminPassword string `env:"EVIDENT_BOOTSTRAP_ADMIN_PASSWORD"`

	EnableSessionCleanup    bool          `env:"EVIDENT_ENABLE_SESSION_CLEANUP" envDefault:"true"`
	SessionCleanupTimeout   time.Duration `env:"EVIDENT_SESSION_CLEANUP_TIMEOUT" envDefault:"30s"`
	EnableAuditTrail        bool          `env:"EVIDENT_ENABLE_AUDIT_TRAIL" envDefault:"true"`
	AuditAllEvents          bool          `env:"EVIDENT_AUDIT_ALL_EVENTS" envDefault:"true"`
	AuditEventTypes         []string      `env:"EVIDENT_AUDIT_EVENT_TYPES" envSeparator:","`
	ActivationTokenDuration time.Duration `env:"EVIDENT_ACTIVATION_TOKEN_DURATION" envDefault:"24h"`
	SessionDuration         time.Duration `env:"EVIDENT_SESSION_DURATION" envDefault:"24h"`
	EnableAutoActivation    bool          `env:"EVIDENT_ENABLE_AUTO_ACTIVATION" envDefault:"false"`
	MaxRetries              int           `env:"EVIDENT_MAX_RETRIES" envDefault:"5"`
	RetryDelay              time.Duration `env:"EVIDENT_RETRY_DELAY" envDefault:"100ms"`
	ReadWaitTimeout         time.Duration `env:"EVIDENT_READ_WAIT_TIMEOUT" envDefault:"5s"`
	PasswordCost            int           `env:"EVIDENT_PASSWORD_COST" envDefault:"10"`
	LogLevel                string        `env:"EVIDENT_LOG_LEVEL" envDefault:"info"`

	// Unknown lists EVIDENT_ variables that were set but mean nothing here.
	Unknown []string
}

// loadConfig reads the optional config file named by EVIDENT_CONFIG_FILE,
// then the environment (which wins), then the flags (which win over both).
func loadConfig(args []string, fs *flag.FlagSet) (Config, error) {
	vars, err := environment(os.Getenv("EVIDENT_CONFIG_FILE"), os.Environ())
	if err != nil {
		return Config{}, err
	}
	var c Config
	var parseErr error
	if err := env.ParseWithOptions(&c, env.Options{Environment: vars}); err != nil {
		var failed []string
		parseErr, failed = envError(err)
		// The variables that did not parse are reported once, as such:
		// read again without them, they take their defaults rather than
		// also failing the range checks as zero values.
		rest := maps.Clone(vars)
		for _, name := range failed {
			delete(rest, name)
		}
		c = Config{}
		_ = env.ParseWithOptions(&c, env.Options{Environment: rest})
	}
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded SQLite store (EVIDENT_DATA_DIR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address (EVIDENT_HTTP_ADDR)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Unknown = unknownVars(vars)
	// Every problem at once: values that did not parse and values out of range.
	return c, errors.Join(parseErr, c.Validate())
}

// unknownVars lists EVIDENT_ variables this build does not read: most
// likely misspelt. The test suites' own EVIDENT_TEST_ variables are not ours.
func unknownVars(vars map[string]string) []string {
	known := map[string]bool{"EVIDENT_CONFIG_FILE": true}
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("env"); tag != "" {
			known[tag] = true
		}
	}
	var out []string
	for k := range vars {
		if strings.HasPrefix(k, "EVIDENT_") && !strings.HasPrefix(k, "EVIDENT_TEST_") && !known[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// environment merges a config file of KEY=VALUE lines (the same EVIDENT_
// names as the environment; # starts a comment) under the process environment.
func environment(file string, environ []string) (map[string]string, error) {
	vars := map[string]string{}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			k = strings.TrimSpace(k)
			if !ok || !strings.HasPrefix(k, "EVIDENT_") {
				return nil, fmt.Errorf("config file %s line %d: want EVIDENT_NAME=value", file, i+1)
			}
			vars[k] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	return vars, nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" && c.EventStoreURL == "" {
		errs = append(errs, errors.New("EVIDENT_DATA_DIR must not be empty"))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("EVIDENT_HTTP_ADDR %q: %w", c.HTTPAddr, err))
	}
	switch {
	case c.EventStoreURL == "":
	case kurrentdb.Handles(c.EventStoreURL):
		if err := kurrentdb.ValidateURL(c.EventStoreURL); err != nil {
			errs = append(errs, fmt.Errorf("EVIDENT_EVENTSTORE_URL: %w", err))
		}
		if c.DatabaseURL == "" {
			errs = append(errs, errors.New("EVIDENT_EVENTSTORE_URL names KurrentDB: set EVIDENT_DATABASE_URL (postgres://…) for the read models"))
		}
	default:
		if err := validURL("EVIDENT_EVENTSTORE_URL", c.EventStoreURL, "postgres", "postgresql", "kurrentdb", "esdb"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.DatabaseURL != "" {
		if err := validURL("EVIDENT_DATABASE_URL", c.DatabaseURL, "postgres", "postgresql"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.AMQPURL != "" && !strings.HasPrefix(c.AMQPURL, "amqp://") && !strings.HasPrefix(c.AMQPURL, "amqps://") {
		errs = append(errs, fmt.Errorf("EVIDENT_AMQP_URL %q: want amqp:// or amqps://", redactURL(c.AMQPURL)))
	}
	if (c.BootstrapAdminEmail == "") != (c.BootstrapAdminPassword == "") {
		errs = append(errs, errors.New("EVIDENT_BOOTSTRAP_ADMIN_EMAIL and EVIDENT_BOOTSTRAP_ADMIN_PASSWORD go together"))
	}
	if c.BootstrapAdminPassword != "" {
		if err := user.ValidatePassword(c.BootstrapAdminPassword); err != nil {
			errs = append(errs, fmt.Errorf("EVIDENT_BOOTSTRAP_ADMIN_PASSWORD: %w", err))
		}
	}
	if c.ActivationTokenDuration <= 0 {
		errs = append(errs, errors.New("EVIDENT_ACTIVATION_TOKEN_DURATION must be positive"))
	}
	if c.SessionDuration <= 0 {
		errs = append(errs, errors.New("EVIDENT_SESSION_DURATION must be positive"))
	}
	if c.SessionCleanupTimeout <= 0 {
		errs = append(errs, errors.New("EVIDENT_SESSION_CLEANUP_TIMEOUT must be positive"))
	}
	for _, t := range c.AuditEventTypes {
		if !knownEventType(t) {
			errs = append(errs, fmt.Errorf("EVIDENT_AUDIT_EVENT_TYPES: unknown event type %q", t))
		}
	}
	if !c.AuditAllEvents && len(c.AuditEventTypes) == 0 && c.EnableAuditTrail {
		errs = append(errs, errors.New("EVIDENT_AUDIT_ALL_EVENTS=false needs EVIDENT_AUDIT_EVENT_TYPES"))
	}
	if c.MaxRetries < 1 || c.MaxRetries > 100 {
		errs = append(errs, errors.New("EVIDENT_MAX_RETRIES must be from 1 to 100"))
	}
	if c.RetryDelay <= 0 {
		errs = append(errs, errors.New("EVIDENT_RETRY_DELAY must be positive"))
	}
	if c.ReadWaitTimeout <= 0 {
		errs = append(errs, errors.New("EVIDENT_READ_WAIT_TIMEOUT must be positive (Prefer: respond-async skips the wait)"))
	}
	if c.PasswordCost < bcrypt.MinCost || c.PasswordCost > bcrypt.MaxCost {
		errs = append(errs, fmt.Errorf("EVIDENT_PASSWORD_COST must be from %d to %d", bcrypt.MinCost, bcrypt.MaxCost))
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c Config) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("EVIDENT_LOG_LEVEL %q: use debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// redactURL hides a password in a connection string.
func redactURL(s string) string {
	if kurrentdb.Handles(s) {
		return kurrentdb.Redact(s)
	}
	if at := strings.LastIndex(s, "@"); at > 0 {
		if scheme := strings.Index(s, "://"); scheme >= 0 && scheme < at {
			return s[:scheme+3] + "…" + s[at:]
		}
	}
	return s
}

func knownEventType(t string) bool { return user.IsType(t) || session.IsType(t) }

// projections are the read models this configuration keeps.
func (c Config) projections() []projections.Projection {
	var out []projections.Projection
	for _, p := range projections.All() {
		if p.Name() == projections.NameAudit && !c.EnableAuditTrail {
			continue
		}
		out = append(out, p)
	}
	return out
}

// envError names the environment variable behind each value that did not
// parse, instead of the Go field name.
func envError(err error) (_ error, failed []string) {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("config: %w", err), nil
	}
	t := reflect.TypeFor[Config]()
	errs := make([]error, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				name := f.Tag.Get("env")
				errs = append(errs, fmt.Errorf("%s: %w", name, pe.Err))
				failed = append(failed, name)
				continue
			}
		}
		errs = append(errs, e)
	}
	return errors.Join(errs...), failed
}
