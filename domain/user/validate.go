package user

import (
	"net/mail"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Roles a user can hold.
const (
	RoleAdmin   = "admin"
	RoleAuditor = "auditor"
	RoleMember  = "member"
)

var knownRoles = []string{RoleAdmin, RoleAuditor, RoleMember}

// NormalizeEmail trims and lower-cases an address and checks that it is a bare
// address (no display name). Two addresses that normalise alike are the same user.
func NormalizeEmail(raw string) (string, error) {
	if !utf8.ValidString(raw) {
		return "", &ValidationError{Field: "email", Reason: "is not valid UTF-8"}
	}
	s := strings.ToLower(strings.TrimSpace(raw))
	if s == "" {
		return "", &ValidationError{Field: "email", Reason: "is required"}
	}
	if strings.ContainsFunc(s, invisible) {
		return "", &ValidationError{Field: "email", Reason: "contains control or invisible formatting characters"}
	}
	if len(s) > 254 {
		return "", &ValidationError{Field: "email", Reason: "is longer than 254 characters"}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", &ValidationError{Field: "email", Reason: "is not a valid address"}
	}
	local, domain, _ := strings.Cut(s, "@")
	if local == "" || !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") {
		return "", &ValidationError{Field: "email", Reason: "is not a valid address"}
	}
	return s, nil
}

// NormalizeName trims a display name and checks its length.
func NormalizeName(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	switch {
	case s == "":
		return "", &ValidationError{Field: "name", Reason: "is required"}
	case !utf8.ValidString(s):
		return "", &ValidationError{Field: "name", Reason: "is not valid UTF-8"}
	case utf8.RuneCountInString(s) > 200:
		return "", &ValidationError{Field: "name", Reason: "is longer than 200 characters"}
	case strings.ContainsFunc(s, unicode.IsControl): // C0, DEL and C1
		return "", &ValidationError{Field: "name", Reason: "contains control characters"}
	case strings.ContainsFunc(s, bidiControl):
		return "", &ValidationError{Field: "name", Reason: "contains bidirectional control characters"}
	case !strings.ContainsFunc(s, visible):
		return "", &ValidationError{Field: "name", Reason: "is required (it has no visible character)"}
	}
	return s, nil
}

// invisible reports the characters that change how an address reads or
// compares without showing: controls, and format characters (zero-width
// spaces and joiners, bidirectional controls, soft hyphens).
func invisible(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// bidiControl reports the embeddings, overrides and isolates that make text
// read in another order than it is stored: in a name they let one user pass
// for another in every list that shows it.
func bidiControl(r rune) bool {
	return r >= '\u202A' && r <= '\u202E' || r >= '\u2066' && r <= '\u2069'
}

// visible reports a character that shows: not a space, not a format
// character such as a zero-width space or joiner (which a name may hold
// between visible ones).
func visible(r rune) bool {
	return !unicode.IsSpace(r) && !unicode.Is(unicode.Cf, r)
}

// NormalizeRoles checks roles, removes duplicates and sorts them; none means member.
func NormalizeRoles(raw []string) ([]string, error) {
	if len(raw) == 0 {
		return []string{RoleMember}, nil
	}
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		if !slices.Contains(knownRoles, r) {
			return nil, &ValidationError{Field: "roles", Reason: "unknown role " + quote(r)}
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ValidateReason checks a free-text reason: valid UTF-8, at most 500
// characters, and no control characters but tab, line feed and carriage
// return. A reason is stored in the read models (a session's end_reason), and
// PostgreSQL's text refuses a NUL: accepted, it would park the event there,
// after the command had answered.
func ValidateReason(s string) error {
	if utf8.RuneCountInString(s) > 500 || !utf8.ValidString(s) || strings.ContainsFunc(s, badReasonRune) {
		return &ValidationError{Field: "reason", Reason: "must be valid UTF-8 of at most 500 characters, without control characters"}
	}
	return nil
}

// ValidatePassword checks a password before it is hashed: at least 8
// characters, and at most 72 bytes, which is all bcrypt reads (a longer one
// would be cut silently).
func ValidatePassword(p string) error {
	if utf8.RuneCountInString(p) < 8 || len(p) > 72 {
		return &ValidationError{Field: "password", Reason: "must be at least 8 characters and at most 72 bytes (UTF-8)"}
	}
	return nil
}

func badReasonRune(r rune) bool {
	return unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r'
}

func quote(s string) string {
	if len(s) > 40 {
		// Cut on a rune boundary: the reason ends up in JSON problem details.
		n := 40
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return "\"" + s + "\""
}
