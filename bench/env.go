package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// machine describes where and with what a run happened.
type machine struct {
	CPU        string
	Cores      int
	Kernel     string
	Go         string
	Postgres   string
	SQLite     string
	Modules    []string
	Commit     string
	LoadBefore string
	LoadAfter  string
	// FsyncFloor is the median latency of write(4 KiB)+fdatasync on the
	// disk that holds the databases, and the rate it allows one writer.
	FsyncMedian time.Duration
	FsyncP99    time.Duration
	FsyncDir    string
}

func (m machine) fsyncRate() float64 {
	if m.FsyncMedian <= 0 {
		return 0
	}
	return float64(time.Second) / float64(m.FsyncMedian)
}

// fsyncFloor writes 4 KiB and fdatasyncs it n times in a file under dir.
func fsyncFloor(dir string, n int) (med, p99 time.Duration, err error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return 0, 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	ds := make([]time.Duration, 0, n)
	for i := range n {
		buf[0] = byte(i)
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			return 0, 0, err
		}
		if err := fdatasync(f); err != nil {
			return 0, 0, err
		}
		ds = append(ds, time.Since(t))
	}
	return time.Duration(percentileMs(ds, 50) * float64(time.Millisecond)),
		time.Duration(percentileMs(ds, 99) * float64(time.Millisecond)), nil
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// load1 is the one-minute load average.
func load1() float64 {
	var v float64
	fmt.Sscan(strings.Fields(loadAvg() + " 0")[0], &v)
	return v
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "Linux " + strings.TrimSpace(string(b))
}

// moduleVersions lists the versions of the modules that matter here, as
// built into this binary.
func moduleVersions() []string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	want := map[string]bool{
		"github.com/modernice/goes":                        true,
		"github.com/hallgren/eventsourcing":                true,
		"github.com/hallgren/eventsourcing/core":           true,
		"github.com/hallgren/eventsourcing/eventstore/sql": true,
		"github.com/jackc/pgx/v5":                          true,
		"modernc.org/sqlite":                               true,
		"github.com/labstack/echo/v4":                      true,
	}
	var out []string
	for _, d := range bi.Deps {
		if want[d.Path] {
			v := d.Version
			if d.Replace != nil {
				v = d.Replace.Version
			}
			out = append(out, d.Path+" "+v)
		}
	}
	return out
}

// gitCommit is the Evident commit under test, "+dirty" when the work tree
// has changes.
func gitCommit(root string) string {
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}

func describeMachine(ctx context.Context, root string, pgVersion func(context.Context) (string, error), tmp string) machine {
	m := machine{
		CPU: cpuModel(), Cores: runtime.NumCPU(), Kernel: kernel(), Go: runtime.Version(),
		Modules: moduleVersions(), Commit: gitCommit(root), LoadBefore: loadAvg(), FsyncDir: tmp,
	}
	if v, err := pgVersion(ctx); err == nil {
		m.Postgres = v
	} else {
		m.Postgres = "unavailable: " + err.Error()
	}
	db, err := sql.Open("sqlite", filepath.Join(tmp, "version.db"))
	if err == nil {
		_ = db.QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&m.SQLite)
		db.Close()
	}
	m.FsyncMedian, m.FsyncP99, _ = fsyncFloor(tmp, 200)
	return m
}
