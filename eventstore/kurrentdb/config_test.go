package kurrentdb

import (
	"testing"
	"time"

	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseURLAccepts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url     string
		address string
		seeds   int
		tlsOff  bool
		user    string
		dns     bool
	}{
		{url: "kurrentdb://localhost:2113?tls=false", address: "localhost:2113", tlsOff: true},
		{url: "esdb://localhost:2113?tls=false", address: "localhost:2113", tlsOff: true},
		{url: "kurrentdb://db.example.org", address: "db.example.org:2113"},
		{url: "esdb://admin:changeit@db:2113?tlsVerifyCert=false", address: "db:2113", user: "admin"},
		{url: "kurrentdb://a:2113,b:2113,c:2113?nodePreference=leader", seeds: 3},
		{url: "esdb+discover://cluster.example.org:2113", address: "cluster.example.org:2113", dns: true},
		{url: "kurrent://x:1?TLS=False&defaultDeadline=5000", address: "x:1", tlsOff: true},
		{url: "kdb://x:1?tls=false&keepAliveInterval=10000&keepAliveTimeout=10000&maxDiscoverAttempts=3&discoveryInterval=50&gossipTimeout=2", address: "x:1", tlsOff: true},
	} {
		conf, err := parseURL(tc.url)
		require.NoError(t, err, tc.url)
		assert.Equal(t, tc.address, conf.Address, tc.url)
		assert.Len(t, conf.GossipSeeds, tc.seeds, tc.url)
		assert.Equal(t, tc.tlsOff, conf.DisableTLS, "%s: TLS is on unless tls=false", tc.url)
		assert.Equal(t, tc.user, conf.Username, tc.url)
		assert.Equal(t, tc.dns, conf.DnsDiscover, tc.url)
	}
}

func TestParseURLRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url  string
		want []string // every problem is reported, at once
	}{
		{"postgres://localhost:5432/evident", []string{"scheme must be one of"}},
		{"localhost:2113", []string{"scheme must be one of"}},
		{"kurrentdb://localhost:2113?tsl=false", []string{`unknown setting "tsl"`}},
		{"kurrentdb://localhost:2113?tls=flase&defaultDeadline=soon", []string{`tls="flase"`, `defaultDeadline="soon"`}},
		{"kurrentdb://localhost:2113?tls=false&tls=true", []string{"given 2 times"}},
		{"kurrentdb://admin:s3cret@localhost:2113?tls=false", []string{"credentials with tls=false"}},
		{"kurrentdb://localhost:2113/some/path", []string{"unsupported URL path"}},
		{"kurrentdb://admin:s3cret@localhost:notaport", []string{"invalid port"}},
		{"kurrentdb://?tls=false", []string{"doesn't have an host"}},
		{"kurrentdb://localhost:2113?nodePreference=nearest", []string{"NodePreference"}},
	} {
		_, err := parseURL(tc.url)
		require.Error(t, err, tc.url)
		for _, w := range tc.want {
			assert.Contains(t, err.Error(), w, tc.url)
		}
		assert.NotContains(t, err.Error(), "s3cret", "the password never appears in an error")
	}
}

func TestHandles(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]bool{
		"kurrentdb://localhost:2113":    true,
		"esdb://localhost:2113":         true,
		"ESDB://localhost:2113":         true,
		"kurrent+discover://x":          true,
		"kdb://x":                       true,
		"postgres://localhost/evident":  false,
		"postgresql://localhost/x":      false,
		"":                              false,
		"kurrentdb":                     false,
		"file:///var/lib/evident.db":    false,
		"kurrentdbx://localhost:2113":   false,
		"https://kurrentdb.example.org": false,
	} {
		assert.Equal(t, want, Handles(url), url)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"kurrentdb://admin:changeit@db:2113?tls=true": "kurrentdb://admin:xxxxx@db:2113?tls=true",
		"esdb://admin:p@ss@a:1,b:2,c:3":               "esdb://admin:xxxxx@a:1,b:2,c:3",
		"esdb://admin@db:2113":                        "esdb://admin@db:2113",
		"esdb://db:2113?tls=false":                    "esdb://db:2113?tls=false",
		"not a url":                                   "not a url",
	} {
		assert.Equal(t, want, Redact(in), in)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	d := Options{}.withDefaults()
	assert.Equal(t, DefaultStreamPrefixes(), d.StreamPrefixes)
	assert.Equal(t, DefaultConnectTimeout, d.ConnectTimeout)
	assert.Equal(t, DefaultMaxAppendBytes, d.MaxAppendBytes)
	assert.Equal(t, DefaultCatchUpIdle, d.CatchUpIdle)
	assert.NotNil(t, d.Logger)
	assert.NoError(t, Options{}.Validate(), "the zero value works")

	r := Options{StreamRegex: "^[^$]"}.withDefaults()
	assert.Nil(t, r.StreamPrefixes, "a regex replaces the default prefixes")

	err := Options{
		StreamPrefixes: []string{"user-", "", "$et-"},
		StreamRegex:    "^user-",
		ConnectTimeout: -time.Second,
	}.Validate()
	require.Error(t, err)
	for _, w := range []string{"exclusive", "empty prefix", `"$et-"`, "negative"} {
		assert.Contains(t, err.Error(), w)
	}
	assert.Error(t, Options{StreamPrefixes: []string{}}.Validate())
}

func TestFilterConstruction(t *testing.T) {
	t.Parallel()
	byPrefix := newFilter(Options{}.withDefaults()).server()
	assert.Equal(t, &kurrentdb.SubscriptionFilter{
		Type:     kurrentdb.StreamFilterType,
		Prefixes: []string{"user-", "session-", "email-"},
	}, byPrefix, "the server filters stream names by Evident's prefixes")

	byRegex := newFilter(Options{StreamRegex: "^[^$]"}.withDefaults()).server()
	assert.Equal(t, &kurrentdb.SubscriptionFilter{Type: kurrentdb.StreamFilterType, Regex: "^[^$]"}, byRegex)
}

func TestFilterKeep(t *testing.T) {
	t.Parallel()
	f := newFilter(Options{}.withDefaults())
	for _, tc := range []struct {
		stream, typ string
		want        bool
	}{
		{"user-0b9c", "user.created", true},
		{"session-1", "auth.user_logged_in", true},
		{"email-ann@example.org", "email.reserved", true},
		{"order-1", "order.placed", false},
		{"users-1", "x", false},
		{"$stats-127.0.0.1:2113", "$statsCollected", false},
		{"$$user-1", "$metadata", false},
		{"user-1", "$streamDeleted", false},
		{"$et-user.created", "$>", false},
	} {
		assert.Equal(t, tc.want, f.keep(tc.stream, tc.typ), "%s %s", tc.stream, tc.typ)
	}

	all := newFilter(Options{StreamRegex: "^[^$]"}.withDefaults())
	assert.True(t, all.keep("order-1", "order.placed"), "a regex is the server's to evaluate")
	assert.False(t, all.keep("$stats-1", "$statsCollected"), "system events are dropped whatever the filter")
	assert.False(t, all.keep("order-1", "$metadata"))
}

func TestValidateURL(t *testing.T) {
	t.Parallel()
	assert.NoError(t, ValidateURL("kurrentdb://localhost:2113?tls=false"))
	err := ValidateURL("kurrentdb://admin:s3cret@localhost:2113?tsl=false")
	assert.ErrorContains(t, err, "tsl")
	assert.NotContains(t, err.Error(), "s3cret")
}
