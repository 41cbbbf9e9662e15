package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyedAttempt is a registration sent with an Idempotency-Key whose first
// answer the client never saw.
type keyedAttempt struct {
	key, email string
	body       map[string]any
}

// retryKeyed retries every attempt with its own key until none is answered
// idempotency_key_in_use any more (the first request can no longer be
// running), then checks that each retry got the registration's one true
// answer: 201 naming the only user with that address, audited once.
func retryKeyed(t *testing.T, s *Server, attempts []keyedAttempt) {
	t.Helper()
	answers := make([]*Response, len(attempts))
	inUse := func() []string {
		var stuck []string
		for i, a := range attempts {
			if answers[i] != nil && answers[i].Status != http.StatusConflict {
				continue
			}
			r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
			if err != nil {
				stuck = append(stuck, a.key+": "+err.Error())
				continue
			}
			answers[i] = r
			var p struct{ Code string }
			_ = json.Unmarshal(r.Body, &p)
			if p.Code == "idempotency_key_in_use" {
				stuck = append(stuck, a.key)
			}
		}
		return stuck
	}
	// A first request still running is bounded by the read-your-writes wait
	// (5s). The embedded store frees a dead process's claims at start; on
	// PostgreSQL, shared by other instances, a claim is taken over once its
	// lease (3 × the wait + 5s = 20s) has run out.
	deadline := time.Now().Add(8 * time.Second)
	if onPostgres() {
		deadline = time.Now().Add(25 * time.Second)
	}
	stuck := inUse()
	for len(stuck) > 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		stuck = inUse()
	}
	assert.Empty(t, stuck, "%d of %d keys are still 'in use' long after their request ended: a retry can never succeed", len(stuck), len(attempts))

	created := countBy(s.Audit(t, "action=user_created"), "user_id")
	for i, a := range attempts {
		r := answers[i]
		rows := s.Users(t, "email="+url.QueryEscape(a.email))
		if !assert.Len(t, rows, 1, "key %s: the retry leaves exactly one user with its address; retry answered %s", a.key, r) {
			continue
		}
		uid, _ := rows[0]["id"].(string)
		assert.Equal(t, 1, created[uid], "key %s: user_created rows", a.key)
		if assert.NotNil(t, r, "key %s", a.key) && assert.Equal(t, http.StatusCreated, r.Status, "key %s: the retry gets the first answer: %s", a.key, r) {
			assert.Equal(t, uid, r.JSON(t)["id"], "key %s: the answer names the user created", a.key)
		}
	}
}

// TestC08_KeyedRetryAfterClientDisconnect: a client gives up on a keyed
// command at every moment of its life and retries with the same key. The
// retry must get the command's answer (run once), never a key stuck "in use".
func TestC08_KeyedRetryAfterClientDisconnect(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var attempts []keyedAttempt
	for i := range 30 {
		a := keyedAttempt{key: fmt.Sprintf("c08-disconnect-%d-%d", time.Now().UnixNano(), i), email: uniqueEmail(t)}
		a.body = map[string]any{"email": a.email, "name": "Impatient"}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(200+i*200)*time.Microsecond)
		r, err := s.TryContext(ctx, http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
		cancel()
		if err == nil {
			assert.Equal(t, http.StatusCreated, r.Status, "%s", r)
		}
		attempts = append(attempts, a)
	}
	retryKeyed(t, s, attempts)
}

// TestC08_KeyedRetryAfterKill: keyed registrations in flight when the server
// is killed are retried with their keys after the restart; answered ones replay.
func TestC08_KeyedRetryAfterKill(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var (
		mu       sync.Mutex
		inflight []keyedAttempt
		acked    = map[string]*Response{}
		ackedAt  = map[string]keyedAttempt{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := keyedAttempt{key: fmt.Sprintf("c08-kill-%d-%d-%d", time.Now().UnixNano(), w, i),
					email: fmt.Sprintf("c08-kill-%d-%d-%d@example.test", time.Now().UnixNano(), w, i)}
				a.body = map[string]any{"email": a.email, "name": "Crash"}
				r, err := s.Try(http.MethodPost, "/v1/users", s.AdminToken, a.body, "Idempotency-Key", a.key)
				mu.Lock()
				switch {
				case err != nil:
					inflight = append(inflight, a)
				case r.Status == http.StatusCreated:
					acked[a.key], ackedAt[a.key] = r, a
				}
				mu.Unlock()
				if err != nil {
					<-stop // the server is gone: this worker is done
					return
				}
			}
		})
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 40
	}, 20*time.Second, 10*time.Millisecond, "the load made no progress")
	time.Sleep(100 * time.Millisecond)
	s.Kill()
	close(stop)
	wg.Wait()
	t.Logf("%d keyed registrations acknowledged, %d in flight at the kill", len(acked), len(inflight))

	s.Restart(t)
	retryKeyed(t, s, inflight)

	// Answers given before the kill are replayed after it.
	n := 0
	for key, first := range acked {
		if n++; n > 10 {
			break
		}
		r := s.Do(t, http.MethodPost, "/v1/users", s.AdminToken, ackedAt[key].body, "Idempotency-Key", key)
		assert.Equal(t, http.StatusCreated, r.Status, "replay of %s after the restart: %s", key, r)
		assert.Equal(t, "true", r.Header.Get("Idempotent-Replayed"), "replay of %s", key)
		assert.JSONEq(t, string(first.Body), string(r.Body), "replay of %s", key)
	}
}
