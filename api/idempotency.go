package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
)

// secretFields are removed from a response before it is kept for replay:
// raw tokens are shown once and never stored.
var secretFields = []string{"token"}

// idempotent honours Idempotency-Key on a command: the first answer (below
// 500) is kept, and a retry with the same key and the same request gets it
// back without running the command again. A key reused for a different
// request is refused, and so is a retry while the first is still running.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key := c.Request().Header.Get("Idempotency-Key")
		if key == "" {
			return next(c)
		}
		if len(key) > 200 {
			return badParam("Idempotency-Key", "must be at most 200 characters")
		}
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return bind(c, &struct{}{}, false) // reports the read error as a problem
		}
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		sum := sha256.Sum256(append([]byte(c.Request().Method+" "+c.Request().URL.Path+"\n"), body...))
		fingerprint := hex.EncodeToString(sum[:])
		scope := actor(c) // anonymous requests share one scope: keys must be unguessable
		ctx := c.Request().Context()

		prev, err := s.q.BeginIdempotent(ctx, scope, key, fingerprint)
		if err != nil {
			return err
		}
		if prev != nil {
			switch {
			case prev.Fingerprint != fingerprint:
				return problem(http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
			case !prev.Done:
				return problem(http.StatusConflict, "idempotency_key_in_use", "a request with this Idempotency-Key is still being processed")
			}
			c.Response().Header().Set("Idempotent-Replayed", "true")
			return c.JSONBlob(prev.Status, prev.Body)
		}

		// A claimed key must reach a recorded outcome: the command runs to its
		// end and its answer is kept even when the client has gone away, so
		// that the client's retry finds it. Under the request's context a
		// disconnect would abort the command and then fail Finish/Abandon
		// too, leaving the claim pending (409 idempotency_key_in_use) for good.
		ctx = context.WithoutCancel(ctx)
		c.SetRequest(c.Request().WithContext(ctx))

		rec := &recorder{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rec
		if err := next(c); err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		if status >= 500 {
			if err := s.q.AbandonIdempotent(ctx, scope, key); err != nil {
				s.log.ErrorContext(ctx, "abandon idempotency key", "err", err)
			}
			return nil
		}
		if err := s.q.FinishIdempotent(ctx, scope, key, status, redact(rec.buf.Bytes())); err != nil {
			s.log.ErrorContext(ctx, "keep idempotent response", "err", err)
		}
		return nil
	}
}

// redact drops secret fields from a JSON object body.
func redact(body []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	changed := false
	for _, f := range secretFields {
		if _, ok := m[f]; ok {
			delete(m, f)
			changed = true
		}
	}
	if !changed {
		return body
	}
	out, err := json.Marshal(m)
	if err != nil {
		return body
	}
	return out
}

type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}
