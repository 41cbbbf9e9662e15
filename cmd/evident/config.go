package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"golang.org/x/crypto/bcrypt"
)

// Config is every setting Evident reads, from the environment only here.
type Config struct {
	DataDir       string `env:"EVIDENT_DATA_DIR" envDefault:"./data"`
	HTTPAddr      string `env:"EVIDENT_HTTP_ADDR" envDefault:":8080"`
	EventStoreURL string `env:"EVIDENT_EVENTSTORE_URL"`
	DatabaseURL   string `env:"EVIDENT_DATABASE_URL"`

	BootstrapAdminEmail    string `env:"EVIDENT_BOOTSTRAP_ADMIN_EMAIL"`
	BootstrapAdminPassword string `env:"EVIDENT_BOOTSTRAP_ADMIN_PASSWORD"`

	ActivationTokenDuration time.Duration `env:"EVIDENT_ACTIVATION_TOKEN_DURATION" envDefault:"24h"`
	SessionDuration         time.Duration `env:"EVIDENT_SESSION_DURATION" envDefault:"24h"`
	EnableAutoActivation    bool          `env:"EVIDENT_ENABLE_AUTO_ACTIVATION" envDefault:"false"`
	MaxRetries              int           `env:"EVIDENT_MAX_RETRIES" envDefault:"5"`
	RetryDelay              time.Duration `env:"EVIDENT_RETRY_DELAY" envDefault:"100ms"`
	ReadWaitTimeout         time.Duration `env:"EVIDENT_READ_WAIT_TIMEOUT" envDefault:"5s"`
	PasswordCost            int           `env:"EVIDENT_PASSWORD_COST" envDefault:"10"`
	LogLevel                string        `env:"EVIDENT_LOG_LEVEL" envDefault:"info"`
}

// loadConfig reads the environment, then the flags that override it.
func loadConfig(args []string, fs *flag.FlagSet) (Config, error) {
	var c Config
	if err := env.Parse(&c); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the embedded SQLite store (EVIDENT_DATA_DIR)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP listen address (EVIDENT_HTTP_ADDR)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	return c, c.Validate()
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
	if c.EventStoreURL != "" {
		errs = append(errs, fmt.Errorf("EVIDENT_EVENTSTORE_URL: %q is not supported by this build yet; leave it empty for the embedded SQLite store", redactURL(c.EventStoreURL)))
	}
	if c.DatabaseURL != "" {
		errs = append(errs, fmt.Errorf("EVIDENT_DATABASE_URL: %q is not supported by this build yet; leave it empty for the embedded SQLite store", redactURL(c.DatabaseURL)))
	}
	if (c.BootstrapAdminEmail == "") != (c.BootstrapAdminPassword == "") {
		errs = append(errs, errors.New("EVIDENT_BOOTSTRAP_ADMIN_EMAIL and EVIDENT_BOOTSTRAP_ADMIN_PASSWORD go together"))
	}
	if c.ActivationTokenDuration <= 0 {
		errs = append(errs, errors.New("EVIDENT_ACTIVATION_TOKEN_DURATION must be positive"))
	}
	if c.SessionDuration <= 0 {
		errs = append(errs, errors.New("EVIDENT_SESSION_DURATION must be positive"))
	}
	if c.MaxRetries < 0 || c.MaxRetries > 100 {
		errs = append(errs, errors.New("EVIDENT_MAX_RETRIES must be from 0 to 100"))
	}
	if c.RetryDelay <= 0 {
		errs = append(errs, errors.New("EVIDENT_RETRY_DELAY must be positive"))
	}
	if c.ReadWaitTimeout < 0 {
		errs = append(errs, errors.New("EVIDENT_READ_WAIT_TIMEOUT must not be negative"))
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
	if at := strings.LastIndex(s, "@"); at > 0 {
		if scheme := strings.Index(s, "://"); scheme >= 0 && scheme < at {
			return s[:scheme+3] + "…" + s[at:]
		}
	}
	return s
}
