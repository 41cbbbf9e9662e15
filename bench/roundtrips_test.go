package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// rtCounter counts the round trips of a pool: a statement sent on its own
// is one, a batch is one however many statements it carries.
type rtCounter struct {
	mu    sync.Mutex
	on    bool
	trips int
	by    map[string]int
}

func (c *rtCounter) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on {
		return
	}
	c.trips++
	c.by[key]++
}

func short(sql string) string {
	sql = strings.Join(strings.Fields(sql), " ")
	if len(sql) > 90 {
		sql = sql[:90]
	}
	return sql
}

type batchKey struct{}

func (c *rtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.add(short(d.SQL))
	return ctx
}
func (c *rtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *rtCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var parts []string
	for _, q := range d.Batch.QueuedQueries {
		parts = append(parts, short(q.SQL)[:min(40, len(short(q.SQL)))])
	}
	c.add("BATCH[" + strings.Join(parts, " | ") + "]")
	return ctx
}
func (c *rtCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *rtCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// TestRoundTrips counts PostgreSQL round trips per registration over HTTP
// (EVIDENT_BENCH_RT=1; needs the server of -pg's default).
func TestRoundTrips(t *testing.T) {
	if os.Getenv("EVIDENT_BENCH_RT") == "" {
		t.Skip("EVIDENT_BENCH_RT not set")
	}
	ctx := context.Background()
	c := &rtCounter{by: map[string]int{}}
	poolTracer = c
	defer func() { poolTracer = nil }()
	srv, err := openPG(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "evident_bench_rt")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, async := range []bool{false, true} {
		a, err := openApp(ctx, where{pg: srv}, "PostgreSQL", 8)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.start(true); err != nil {
			t.Fatal(err)
		}
		reg := func(i int) {
			body := fmt.Appendf(nil, `{"email":"u%d-%v@example.com","name":"Bench User"}`, i, async)
			req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+"/v1/users", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if async {
				req.Header.Set("Prefer", "respond-async")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("HTTP %d", resp.StatusCode)
			}
		}
		for i := range 50 {
			reg(i)
		}
		time.Sleep(300 * time.Millisecond)
		const n = 400
		c.mu.Lock()
		c.on, c.trips, c.by = true, 0, map[string]int{}
		c.mu.Unlock()
		cpu0 := pgCPU(t, ctx, srv)
		var self0 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
		began := time.Now()
		for i := range n {
			reg(1000 + i)
			if async {
				time.Sleep(2 * time.Millisecond) // let the read side follow, as the default would
			}
		}
		took := time.Since(began)
		cpu1 := pgCPU(t, ctx, srv)
		var self1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
		var ticks int64
		for pid, v := range cpu1 {
			ticks += v - cpu0[pid]
		}
		goCPU := time.Duration(self1.Utime.Nano() + self1.Stime.Nano() - self0.Utime.Nano() - self0.Stime.Nano())
		t.Logf("async=%v: server CPU %.3f ms, Go CPU %.3f ms per registration (client included)", async,
			float64(ticks)*10/n, float64(goCPU.Microseconds())/1000/n)
		time.Sleep(300 * time.Millisecond)
		c.mu.Lock()
		c.on = false
		t.Logf("async=%v: %s per registration", async, took/n)
		type kv struct {
			k string
			v int
		}
		var list []kv
		for k, v := range c.by {
			list = append(list, kv{k, v})
		}
		sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
		t.Logf("async=%v: %.2f round trips per registration (%d for %d)", async, float64(c.trips)/n, c.trips, n)
		for _, e := range list {
			t.Logf("  %6.2f  %s", float64(e.v)/n, e.k)
		}
		c.mu.Unlock()
		a.Close()
	}
}

// pgCPU reads the CPU ticks (utime+stime, 10 ms each) of every server
// process connected to the scratch database.
func pgCPU(t *testing.T, ctx context.Context, srv *pgServer) map[int]int64 {
	conn, err := pgx.Connect(ctx, srv.baseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1`, srv.dbName)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		fields := strings.Fields(line[strings.LastIndexByte(line, ')')+2:])
		u, _ := strconv.ParseInt(fields[11], 10, 64)
		s, _ := strconv.ParseInt(fields[12], 10, 64)
		out[int(pid)] = u + s
	}
	return out
}
