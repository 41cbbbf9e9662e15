// Package domain_test guards the rule of STYLE.md "Packages and
// dependencies": domain/ imports the standard library and uuid only.
package domain_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var allowed = []string{"github.com/google/uuid"}

func TestDomainImportsOnlyStdlibAndUUID(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not on PATH; run under `go test`, which puts it there")
	}
	touchSources(t)
	// Non-test dependencies only: tests may use what they like.
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "evident/domain/...")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	var seen []string
	for _, p := range strings.Fields(string(out)) {
		switch {
		case p == "evident/domain" || strings.HasPrefix(p, "evident/domain/"):
			seen = append(seen, p)
		case slices.Contains(allowed, p):
		default:
			t.Errorf("domain/ depends on %s; only the standard library and %v are allowed", p, allowed)
		}
	}
	for _, want := range []string{"evident/domain/user", "evident/domain/session", "evident/domain/email"} {
		if !slices.Contains(seen, want) {
			t.Errorf("go list did not report %s; the check looked at %v", want, seen)
		}
	}
}

// touchSources reads every file under domain/ and go.mod. `go test` caches a
// result keyed on the files the test itself opened; the go list child's reads
// are invisible to it, so without this a new import would hit a stale PASS.
func touchSources(t *testing.T) {
	t.Helper()
	if _, err := os.ReadFile(filepath.Join("..", "go.mod")); err != nil {
		t.Fatalf("read go.mod: %v", err)
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		_, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		t.Fatalf("walk domain/: %v", err)
	}
}
