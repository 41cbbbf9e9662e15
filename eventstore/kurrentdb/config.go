package kurrentdb

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
)

// Defaults of Options.
const (
	// DefaultConnectTimeout bounds how long New waits for the server.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxAppendBytes is the server's own default MaxAppendSize.
	DefaultMaxAppendBytes = 1 << 20
	// DefaultCatchUpIdle bounds how long ReadAll waits for the next message
	// of its catch-up read before it returns what it has.
	DefaultCatchUpIdle = time.Second
)

// MaxAppendEvents is the most events one Append may write, over all requests.
const MaxAppendEvents = 5000

// DefaultStreamPrefixes are the streams Evident writes: users, sessions and
// the e-mail reservations that guard unique addresses.
func DefaultStreamPrefixes() []string { return []string{"user-", "session-", "email-"} }

// Options tune a Store. The zero value works.
type Options struct {
	// StreamPrefixes select, on the server, the streams ReadAll, Wait and
	// Subscribe see. Nil means DefaultStreamPrefixes. Streams and event
	// types that begin with "$" (the server's own) are never seen.
	StreamPrefixes []string
	// StreamRegex, when set, selects the streams by a regular expression
	// that the server evaluates (in its own, .NET, syntax) instead of by
	// prefix. The conformance tests use "^[^$]": every non-system stream.
	StreamRegex string
	// ConnectTimeout bounds how long New waits for the server; zero means
	// DefaultConnectTimeout. The ctx given to New may bound it further.
	ConnectTimeout time.Duration
	// MaxAppendBytes is the most bytes one Append may carry, counted as the
	// server counts them (data, metadata and twice the type's length); zero
	// means DefaultMaxAppendBytes. Raise it only with the server's
	// MaxAppendSize.
	MaxAppendBytes int
	// CatchUpIdle bounds the silence ReadAll accepts before it returns the
	// events it has; zero means DefaultCatchUpIdle. Servers that announce
	// "caught up" end a read sooner; older ones end it this way.
	CatchUpIdle time.Duration
	// Logger receives the client library's own log lines, at debug level.
	// Nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.StreamPrefixes == nil && o.StreamRegex == "" {
		o.StreamPrefixes = DefaultStreamPrefixes()
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MaxAppendBytes <= 0 {
		o.MaxAppendBytes = DefaultMaxAppendBytes
	}
	if o.CatchUpIdle <= 0 {
		o.CatchUpIdle = DefaultCatchUpIdle
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports every problem of the options at once.
func (o Options) Validate() error {
	var errs []error
	if o.StreamRegex != "" && len(o.StreamPrefixes) > 0 {
		errs = append(errs, errors.New("StreamPrefixes and StreamRegex are exclusive: the server filters by one or the other"))
	}
	if o.StreamPrefixes != nil && len(o.StreamPrefixes) == 0 {
		errs = append(errs, errors.New("StreamPrefixes is empty: leave it nil for the defaults"))
	}
	for _, p := range o.StreamPrefixes {
		switch {
		case p == "":
			errs = append(errs, errors.New("StreamPrefixes: an empty prefix would select every stream, the server's too"))
		case strings.HasPrefix(p, "$"):
			errs = append(errs, fmt.Errorf("StreamPrefixes: %q selects the server's system streams", p))
		}
	}
	if o.ConnectTimeout < 0 || o.MaxAppendBytes < 0 || o.CatchUpIdle < 0 {
		errs = append(errs, errors.New("ConnectTimeout, MaxAppendBytes and CatchUpIdle must not be negative"))
	}
	return errors.Join(errs...)
}

// schemes are the connection-string schemes the client accepts.
var schemes = map[string]bool{
	"esdb": true, "esdb+discover": true,
	"kdb": true, "kdb+discover": true,
	"kurrent": true, "kurrent+discover": true,
	"kurrentdb": true, "kurrentdb+discover": true,
}

// Handles reports whether rawURL names a KurrentDB or EventStoreDB server,
// i.e. whether it is this adapter's to open.
func Handles(rawURL string) bool {
	scheme, _, ok := strings.Cut(rawURL, "://")
	return ok && schemes[strings.ToLower(scheme)]
}

// settings are the query parameters the client understands, lower-cased; it
// ignores any other with a warning, which turns a typo such as "tsl=false"
// into a silent TLS handshake with a plain-text server.
var settings = map[string]bool{
	"tls": true, "tlsverifycert": true, "tlscafile": true,
	"usercertfile": true, "userkeyfile": true,
	"nodepreference": true, "defaultdeadline": true,
	"discoveryinterval": true, "gossiptimeout": true, "maxdiscoverattempts": true,
	"keepaliveinterval": true, "keepalivetimeout": true,
}

// ValidateURL checks a connection string as New will, without connecting,
// for a configuration's Validate: kurrentdb://, esdb://, kdb:// or
// kurrent:// (each also +discover), one host or a comma-separated list of
// gossip seeds, and the client's settings (tls=false for a local insecure
// server; TLS is on otherwise). Settings the client would ignore, such as a
// misspelt "tsl", are errors. Every problem is reported at once; the
// password never appears in the error.
func ValidateURL(rawURL string) error {
	_, err := parseURL(rawURL)
	return err
}

// parseURL checks a kurrentdb://, esdb:// (or kdb://, kurrent://, each also
// with +discover) connection string, as the client accepts them, and returns
// the client's configuration for it. TLS is on unless the string says
// tls=false. Every problem is reported at once, including settings the
// client would ignore with a warning; the password never appears in an error.
func parseURL(rawURL string) (*kurrentdb.Configuration, error) {
	shown := Redact(rawURL)
	fail := func(errs ...error) error {
		return fmt.Errorf("kurrentdb eventstore: connection string %q: %w", shown, errors.Join(errs...))
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || !schemes[strings.ToLower(scheme)] {
		return nil, fail(fmt.Errorf("scheme must be one of kurrentdb://, esdb://, kdb://, kurrent:// (optionally +discover)"))
	}

	var errs []error
	query := ""
	if _, q, ok := strings.Cut(rest, "?"); ok {
		query = q
	}
	values, err := url.ParseQuery(query)
	if err != nil {
		errs = append(errs, fmt.Errorf("query: %w", err))
	}
	var tlsOff, unknown bool
	for key, vals := range values {
		k := strings.ToLower(key)
		if !settings[k] {
			errs = append(errs, fmt.Errorf("unknown setting %q", key))
			unknown = true
			continue
		}
		if len(vals) > 1 {
			errs = append(errs, fmt.Errorf("setting %q given %d times", key, len(vals)))
		}
		v := vals[0]
		switch k {
		case "tls", "tlsverifycert":
			b, err := strconv.ParseBool(strings.ToLower(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want true or false", key, v))
			}
			if k == "tls" && err == nil && !b {
				tlsOff = true
			}
		case "defaultdeadline", "discoveryinterval", "gossiptimeout", "maxdiscoverattempts":
			// The client ignores a bad defaultDeadline without a word.
			if n, err := strconv.Atoi(v); err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive integer", key, v))
			}
		}
	}
	if unknown {
		// The client would only log a warning about them; stop here.
		return nil, fail(errs...)
	}
	conf, err := kurrentdb.ParseConnectionString(rawURL)
	if err != nil {
		// The client's messages may quote the string; keep only ours.
		errs = append(errs, errors.New(strings.ReplaceAll(err.Error(), rawURL, shown)))
	}
	if conf != nil && tlsOff && (conf.Username != "" || conf.Password != "") {
		errs = append(errs, errors.New("credentials with tls=false: the client never sends them over plain text, so every call would be anonymous"))
	}
	if len(errs) > 0 {
		return nil, fail(errs...)
	}
	return conf, nil
}

// Redact returns rawURL with its password, if any, replaced by "xxxxx".
func Redact(rawURL string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rawURL
	}
	// The userinfo ends at the last "@" before the first "/" or "?": gossip
	// seed lists ("a:1,b:2") are not URLs that net/url would parse.
	end := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		end = i
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return rawURL
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return rawURL
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// filter is the selection of streams ReadAll, Wait and Subscribe see.
type filter struct {
	prefixes []string
	regex    string
}

func newFilter(o Options) filter {
	return filter{prefixes: o.StreamPrefixes, regex: o.StreamRegex}
}

// server is the filter the server applies to a $all subscription.
func (f filter) server() *kurrentdb.SubscriptionFilter {
	if f.regex != "" {
		return &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Regex: f.regex}
	}
	return &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Prefixes: f.prefixes}
}

// keep is the same selection checked again on what arrives. The server has
// filtered already; this drops the server's own events whatever the filter
// (a "$streamDeleted" tombstone in a user stream, say) and guards against a
// server that ignored the filter. A regular expression is left to the
// server: Go's syntax is not .NET's, and a second opinion that differs would
// drop events silently.
func (f filter) keep(stream, eventType string) bool {
	if strings.HasPrefix(stream, "$") || strings.HasPrefix(eventType, "$") {
		return false
	}
	if f.regex != "" {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}
