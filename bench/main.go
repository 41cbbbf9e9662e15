// Command bench is Evident's side-by-side benchmark suite: every scenario
// runs for Evident, for the raw database limit and for peer event stores,
// interleaved round by round on fresh databases, and every figure is read
// as a ratio to what was measured in the same run.
//
//	go -C bench run . -profile full    # the table in docs/benchmarks.md (≈8–12 min)
//	go -C bench run . -profile smoke   # CI: a few seconds per cell, fails only
//	                                   # when Evident < 0.5× raw on a guarded row
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	_ "github.com/hallgren/eventsourcing" // pinned peer framework; its store is driven below it
)

type profile struct {
	name          string
	rounds        int
	dur           time.Duration // one measured run
	writers       []int         // new-stream appends
	zipfWriters   []int
	users         int
	hotWriters    int
	batch         bool
	peers         bool
	httpConns     []int
	httpAsync     bool
	rebuildEvents int
	auditQueries  int
	lagDur        time.Duration
	guard         bool
}

var profiles = map[string]profile{
	"full": {
		name: "full", rounds: 3, dur: 1500 * time.Millisecond,
		writers: []int{1, 8, 32}, zipfWriters: []int{8}, users: 100_000, hotWriters: 8,
		batch: true, peers: true, httpConns: []int{1, 8, 32}, httpAsync: true,
		rebuildEvents: 100_000, auditQueries: 200, lagDur: 4 * time.Second,
	},
	"smoke": {
		name: "smoke", rounds: 3, dur: 500 * time.Millisecond,
		writers: []int{1, 8}, zipfWriters: []int{1, 8}, users: 2000, hotWriters: 0,
		peers: false, httpConns: []int{8},
		rebuildEvents: 3000, auditQueries: 30, lagDur: 0, guard: true,
	},
}

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if code == 0 {
			code = 2
		}
	}
	os.Exit(code)
}

func run() (int, error) {
	var (
		profName = flag.String("profile", "smoke", "full or smoke")
		pgURL    = flag.String("pg", envOr("EVIDENT_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL server (loopback only); the benchmark creates and drops the database -db on it")
		dbName   = flag.String("db", "evident_bench", "the database the benchmark creates and drops (give concurrent runs different names)")
		docPath  = flag.String("doc", "", "write the table into this Markdown file (default: ../docs/benchmarks.md for -profile full, none for smoke)")
		only     = flag.String("only", "", "run only scenarios whose label matches this regexp (development)")
		tmpDir   = flag.String("tmp", "", "directory for SQLite files and the fsync probe (default: a temp dir on the work disk)")
		rounds   = flag.Int("rounds", 0, "override the profile's rounds (≥3 for published figures)")
		dur      = flag.Duration("dur", 0, "override the profile's run duration")
		noGuard  = flag.Bool("no-guard", false, "never fail on the regression guard")
		cpuProf  = flag.String("cpuprofile", "", "write a CPU profile of the whole run here (development)")
		memProf  = flag.String("memprofile", "", "write an allocation profile of the whole run here (development)")
	)
	flag.Parse()
	p, ok := profiles[*profName]
	if !ok {
		return 2, fmt.Errorf("unknown profile %q (full or smoke)", *profName)
	}
	if *rounds > 0 {
		p.rounds = *rounds
	}
	if *dur > 0 {
		p.dur = *dur
	}
	if *noGuard {
		p.guard = false
	}
	doc := *docPath
	if doc == "" && p.name == "full" && *only == "" {
		doc = "../docs/benchmarks.md"
	}
	var filter *regexp.Regexp
	if *only != "" {
		var err error
		if filter, err = regexp.Compile(*only); err != nil {
			return 2, err
		}
	}

	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return 2, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return 2, err
		}
		defer pprof.StopCPUProfile()
	}
	if *memProf != "" {
		defer func() {
			if f, err := os.Create(*memProf); err == nil {
				_ = pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, _ := filepath.Abs("..")
	tmp := *tmpDir
	if tmp == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "evident-bench-*"); err != nil {
			return 2, err
		}
		defer os.RemoveAll(tmp)
	}
	pg, err := openPG(ctx, *pgURL, *dbName)
	if err != nil {
		if p.guard {
			// The smoke profile fails only on the regression guard; a
			// missing server is for the other suites to report.
			fmt.Fprintln(os.Stderr, "bench: smoke profile skipped, PostgreSQL unavailable:", err)
			return 0, nil
		}
		return 2, err
	}
	defer pg.Close()
	currentPG = pg
	w := where{pg: pg, tmp: tmp}

	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	m := describeMachine(ctx, root, pg.version, tmp)
	logf("profile %s: %d rounds × %s per run; load %s; fsync floor %s median (%.0f/s)",
		p.name, p.rounds, p.dur, m.LoadBefore, m.FsyncMedian.Round(time.Microsecond), m.fsyncRate())

	began := time.Now()
	var rows []row
	again := map[string]func() []row{} // re-measures a scenario by row id
	want := func(label string) bool { return filter == nil || filter.MatchString(label) }
	for _, b := range backends(p) {
		for _, n := range p.writers {
			if want(fmt.Sprintf("%s new %d", b.name, n)) {
				again[fmt.Sprintf("%s/new/%d", b.name, n)] = func() []row { return scenarioNewStream(ctx, p, w, b, n, logf) }
				rows = append(rows, scenarioNewStream(ctx, p, w, b, n, logf)...)
			}
		}
		for _, n := range p.zipfWriters {
			if want(fmt.Sprintf("%s zipf %d", b.name, n)) {
				again[fmt.Sprintf("%s/zipf/%d", b.name, n)] = func() []row { return scenarioZipf(ctx, p, w, b, n, logf) }
				rows = append(rows, scenarioZipf(ctx, p, w, b, n, logf)...)
			}
		}
		if p.hotWriters > 0 && want(b.name+" hot") {
			rows = append(rows, scenarioHot(ctx, p, w, b, p.hotWriters, logf)...)
		}
		if p.batch && want(b.name+" batch") {
			rows = append(rows, scenarioBatch(ctx, p, w, b, logf)...)
		}
	}
	for _, b := range backends(p) {
		for _, n := range p.httpConns {
			if want(fmt.Sprintf("%s http %d", b.name, n)) {
				rows = append(rows, scenarioHTTP(ctx, p, w, b.name, n, logf)...)
			}
		}
	}
	for _, b := range backends(p) {
		if p.rebuildEvents > 0 && want(b.name+" replay") {
			rows = append(rows, scenarioReplay(ctx, p, w, b.name, logf)...)
		}
		if p.lagDur > 0 && want(b.name+" lag") {
			rows = append(rows, scenarioLag(ctx, p, w, b.name, logf)...)
		}
	}
	markGuards(rows)
	if p.guard {
		// A guarded row below the line is measured once more (3 new rounds)
		// before it fails the run: a regression fails both times, a noisy
		// moment on a shared machine rarely does.
		for i := range rows {
			r := &rows[i]
			if q := r.ratioRaw(); r.Guard && !(q >= 0.5) && again[r.ID] != nil {
				logf("guard: %s — %s at %.2f× raw; measuring it again", r.Section, r.Name, q)
				for _, nr := range again[r.ID]() {
					if nr.ID == r.ID {
						nr.Guard = true
						nr.Notes = append(nr.Notes, fmt.Sprintf("re-measured after %.2f× raw", q))
						*r = nr
						break
					}
				}
			}
		}
	}
	m.LoadAfter = loadAvg()
	elapsed := time.Since(began)

	var sb strings.Builder
	writeTable(&sb, rows)
	fmt.Println(sb.String())
	logf("done in %s; load %s", elapsed.Round(time.Second), m.LoadAfter)

	if doc != "" {
		if err := writeDoc(doc, p, m, elapsed, rows); err != nil {
			return 2, err
		}
		logf("wrote %s", doc)
	}
	if p.guard {
		if failed := guardFailures(rows); len(failed) > 0 {
			for _, f := range failed {
				fmt.Fprintln(os.Stderr, "REGRESSION:", f)
			}
			return 1, fmt.Errorf("%d guarded scenario(s) below 0.5× the raw limit", len(failed))
		}
		fmt.Println("guard: every guarded scenario is at or above 0.5× its raw limit")
	}
	return 0, nil
}

// guarded are the rows the smoke profile holds to evident ≥ 0.5× raw: those
// where Evident is at or well above half the raw limit today, so that a
// failure means a regression and not a known gap. The rows that miss their
// targets by more (PostgreSQL appends under concurrency, HTTP commands that
// wait for the read models, rebuilds) are listed in docs/benchmarks.md with
// the change that would close each gap; guard them here once it lands.
var guarded = map[string]bool{
	"PostgreSQL/zipf/1": true,
	"SQLite/new/1":      true,
	"SQLite/zipf/1":     true,
	// Group commit put these at 2–3× raw; half of raw means it broke.
	"SQLite/new/8":  true,
	"SQLite/zipf/8": true,
}

func markGuards(rows []row) {
	seen := map[string]bool{}
	for i := range rows {
		rows[i].Guard = guarded[rows[i].ID] && !seen[rows[i].ID]
		seen[rows[i].ID] = true
	}
}

// guardFailures are guarded rows where Evident fell below half the raw
// limit measured in the same run. A row that could not be measured fails too.
func guardFailures(rows []row) []string {
	var out []string
	for i := range rows {
		r := &rows[i]
		if !r.Guard {
			continue
		}
		q := r.ratioRaw()
		switch {
		case len(values(r.Evident)) == 0:
			// Evident failed every round: that is a regression too.
			out = append(out, fmt.Sprintf("%s — %s: evident failed (%s)", r.Section, r.Name, strings.Join(r.allNotes(), "; ")))
		case q != q: // NaN: the raw side could not be measured; nothing to compare
			fmt.Fprintf(os.Stderr, "guard: %s — %s: raw limit not measured, not checked (%s)\n", r.Section, r.Name, strings.Join(r.allNotes(), "; "))
		case q < 0.5:
			out = append(out, fmt.Sprintf("%s — %s: evident %.2f× %s", r.Section, r.Name, q, r.RawName))
		}
	}
	return out
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
