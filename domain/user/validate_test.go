package user_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"evident/domain/user"

	"github.com/stretchr/testify/assert"
)

// wantInvalid checks err is a *ValidationError on field.
func wantInvalid(t *testing.T, in any, err error, field string) {
	t.Helper()
	var ve *user.ValidationError
	if !errors.As(err, &ve) {
		t.Errorf("%q: error %v, want a *ValidationError", in, err)
		return
	}
	if ve.Field != field {
		t.Errorf("%q: field %q, want %q", in, ve.Field, field)
	}
	if !utf8.ValidString(ve.Error()) {
		t.Errorf("%q: error message is not valid UTF-8: %q", in, ve.Error())
	}
}

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	// 64 + 1 + 189 = 254 characters, the longest address allowed.
	longest := strings.Repeat("a", 64) + "@" + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 63) + ".com"
	if len(longest) != 254 {
		t.Fatalf("fixture is %d characters", len(longest))
	}
	valid := map[string]string{
		"ann@example.com":              "ann@example.com",
		"Ann@Example.COM":              "ann@example.com",
		"  ann@example.com\t\n":        "ann@example.com",
		" ANN.B+tag@Mail.Example.org ": "ann.b+tag@mail.example.org",
		longest:                        longest,
		strings.ToUpper(longest):       longest,
	}
	for in, want := range valid {
		got, err := user.NormalizeEmail(in)
		if err != nil || got != want {
			t.Errorf("NormalizeEmail(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	invalid := []string{
		"ka\u200bte@example.org", // zero-width space
		"bi\u202edi@example.org", // right-to-left override
		"ann\u00ad@example.org",  // soft hyphen
		"ann\x00@example.org",
		"ann\xff@example.org",
		"",
		"   ",
		"ann",
		"ann@",
		"@example.com",
		"ann@localhost",
		"ann@example",
		"ann@example.",
		"ann@.example.com",
		"ann@@example.com",
		"ann @example.com",
		"ann@exa mple.com",
		"Ann <ann@example.com>",
		"<ann@example.com>",
		`"Ann" <ann@example.com>`,
		"ann@example.com (Ann)",
		"ann@example.com, bob@example.com",
		`"ann b"@example.com`,
		"a" + longest, // 255
		strings.Repeat("x", 300) + "@example.com",
	}
	for _, in := range invalid {
		got, err := user.NormalizeEmail(in)
		if got != "" {
			t.Errorf("NormalizeEmail(%q) = %q, want nothing", in, got)
		}
		wantInvalid(t, in, err, "email")
	}
}

func TestNormalizeName(t *testing.T) {
	t.Parallel()
	valid := map[string]string{
		"Ann":                                "Ann",
		"  Ann Bell \t":                      "Ann Bell",
		"Zoë Ångström":                       "Zoë Ångström",
		"李小龙":                                "李小龙",
		strings.Repeat("é", 200):             strings.Repeat("é", 200),
		" " + strings.Repeat("n", 200) + " ": strings.Repeat("n", 200),
		"میرزا\u200cخان":                     "میرزا\u200cخان", // a zero-width non-joiner between visible letters
	}
	for in, want := range valid {
		got, err := user.NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	invalid := []string{
		"",
		" \t\n ",
		strings.Repeat("é", 201),
		"Ann\x00Bell",
		"Ann\tBell",
		"Ann\nBell",
		"Ann\x7fBell",
		"Ann\u0085Bell", // NEL, a C1 control
		"Ann\u009bBell", // CSI, a C1 control
		"Ann\xffBell",   // not UTF-8
		"\u200b",        // a zero-width space alone looks empty
		" \u200b\u2060\ufeff ",
		"\u202eevil",    // right-to-left override
		"Ann\u2066Bell", // left-to-right isolate
	}
	for _, in := range invalid {
		got, err := user.NormalizeName(in)
		if got != "" {
			t.Errorf("NormalizeName(%q) = %q, want nothing", in, got)
		}
		wantInvalid(t, in, err, "name")
	}
}

func TestNormalizeRoles(t *testing.T) {
	t.Parallel()
	valid := []struct{ in, want []string }{
		{nil, []string{"member"}},
		{[]string{}, []string{"member"}},
		{[]string{"member"}, []string{"member"}},
		{[]string{"member", "admin"}, []string{"admin", "member"}},
		{[]string{"auditor", "admin", "auditor", "admin"}, []string{"admin", "auditor"}},
		{[]string{"member", "auditor", "admin", "member"}, []string{"admin", "auditor", "member"}},
	}
	for _, tc := range valid {
		in := append([]string(nil), tc.in...)
		got, err := user.NormalizeRoles(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("NormalizeRoles(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if !reflect.DeepEqual(in, append([]string(nil), tc.in...)) {
			t.Errorf("NormalizeRoles changed its input to %q", tc.in)
		}
	}
	invalid := [][]string{
		{"root"},
		{"admin", "root"},
		{"Admin"},
		{" member"},
		{""},
		{"a" + strings.Repeat("é", 30)}, // the quoted role in the reason must stay valid UTF-8
	}
	for _, in := range invalid {
		got, err := user.NormalizeRoles(in)
		if got != nil {
			t.Errorf("NormalizeRoles(%q) = %q, want nil", in, got)
		}
		wantInvalid(t, in, err, "roles")
	}
}

func TestValidateReason(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "left the company", strings.Repeat("é", 500), "line one\r\nline two\tend"} {
		if err := user.ValidateReason(ok); err != nil {
			t.Errorf("ValidateReason(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{strings.Repeat("a", 501), "bad \xff", "a\x00b", "\x1b[31m", "del\x7f", "c1\u0085"} {
		wantInvalid(t, bad, user.ValidateReason(bad), "reason")
	}
}

// A password is counted in characters for its minimum and in bytes for its
// maximum (bcrypt reads 72), and the message says both.
func TestValidatePassword(t *testing.T) {
	for p, ok := range map[string]bool{
		"1234567":               false,
		"12345678":              true,
		"ééééééé":               false, // 7 characters, 14 bytes
		"éééééééé":              true,  // 8 characters, 16 bytes
		strings.Repeat("a", 72): true,
		strings.Repeat("a", 73): false,
		strings.Repeat("é", 36): true,  // 72 bytes
		strings.Repeat("é", 37): false, // 74 bytes
	} {
		err := user.ValidatePassword(p)
		if ok {
			assert.NoError(t, err, "%q", p)
			continue
		}
		var v *user.ValidationError
		if assert.ErrorAs(t, err, &v, "%q", p) {
			assert.Equal(t, "password", v.Field)
			assert.Contains(t, v.Reason, "at least 8 characters")
			assert.Contains(t, v.Reason, "at most 72 bytes")
		}
	}
}
