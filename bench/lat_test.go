package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestWaitLatency(t *testing.T) {
	if os.Getenv("EVIDENT_BENCH_RT") == "" {
		t.Skip()
	}
	ctx := context.Background()
	srv, err := openPG(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "evident_bench_lat")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, conns := range []int{1, 8} {
		a, err := openApp(ctx, where{pg: srv}, "PostgreSQL", conns+8)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.start(true); err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
		client := &http.Client{Transport: tr}
		var mu sync.Mutex
		var lats []time.Duration
		var wg sync.WaitGroup
		deadline := time.Now().Add(3 * time.Second)
		for w := range conns {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					body := fmt.Appendf(nil, `{"email":"c%d-w%d-%d@example.com","name":"B"}`, conns, w, i)
					req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+"/v1/users", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					began := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					d := time.Since(began)
					mu.Lock()
					lats = append(lats, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
		n := len(lats)
		var slow int
		for _, d := range lats {
			if d > 100*time.Millisecond {
				slow++
			}
		}
		t.Logf("conns=%d: n=%d p50=%s p90=%s p99=%s max=%s >100ms=%d", conns, n, lats[n/2], lats[n*9/10], lats[n*99/100], lats[n-1], slow)
		tr.CloseIdleConnections()
		a.Close()
	}
}
