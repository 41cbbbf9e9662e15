package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	beginMark = "<!-- BEGIN GENERATED: go -C bench run . -profile full -->"
	endMark   = "<!-- END GENERATED -->"
)

// writeDoc replaces the generated block of path (or creates the file),
// leaving the prose around it as it is.
func writeDoc(path string, p profile, m machine, elapsed time.Duration, rows []row) error {
	var b strings.Builder
	b.WriteString(beginMark + "\n\n")
	fmt.Fprintf(&b, "Run: %s, profile `%s`, %d rounds per scenario, %s per measured run, %s in all.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), p.name, p.rounds, p.dur, elapsed.Round(time.Second))
	fmt.Fprintf(&b, "| machine | |\n| --- | --- |\n")
	fmt.Fprintf(&b, "| CPU | %s, %d cores |\n", m.CPU, m.Cores)
	fmt.Fprintf(&b, "| kernel | %s |\n", m.Kernel)
	fmt.Fprintf(&b, "| fsync floor | write 4 KiB + fdatasync: median %s, p99 %s (≈ %.0f syncs/s for one writer), on the disk holding both databases |\n",
		m.FsyncMedian.Round(time.Microsecond), m.FsyncP99.Round(time.Microsecond), m.fsyncRate())
	fmt.Fprintf(&b, "| load average (1/5/15 min) | before %s, after %s%s |\n", m.LoadBefore, m.LoadAfter, sharedNote(m))
	fmt.Fprintf(&b, "| Go | %s |\n", m.Go)
	fmt.Fprintf(&b, "| PostgreSQL | %s |\n", m.Postgres)
	fmt.Fprintf(&b, "| SQLite | %s via modernc.org/sqlite (WAL, synchronous=FULL) |\n", m.SQLite)
	fmt.Fprintf(&b, "| Evident | commit %s |\n", m.Commit)
	for _, mod := range m.Modules {
		fmt.Fprintf(&b, "| module | %s |\n", mod)
	}
	b.WriteString("\n")
	writeTable(&b, rows)
	b.WriteString("\n" + endMark + "\n")

	old, err := os.ReadFile(path)
	var out string
	switch {
	case err == nil && strings.Contains(string(old), beginMark) && strings.Contains(string(old), endMark):
		s := string(old)
		i := strings.Index(s, beginMark)
		j := strings.Index(s, endMark) + len(endMark) + 1
		out = s[:i] + b.String() + s[min(j, len(s)):]
	case err == nil:
		out = string(old) + "\n" + b.String()
	default:
		out = "# Benchmarks\n\n" + b.String()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

func sharedNote(m machine) string {
	if load1() > 0.5 || strings.HasPrefix(m.LoadBefore, "0.") == false {
		return " — the machine was shared with other work during the run"
	}
	return ""
}
