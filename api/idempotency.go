package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"evident/commands"
	"evident/readmodels"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// answerHeaders are the headers that belong to an answer, kept with it and
// replayed: its content type, the stream version (ETag), what it created
// (Location), that it did not wait for the read models (Preference-Applied:
// a replay is that same answer) and the challenge a 401 carries. Headers
// about the exchange itself (X-Request-Id, Date, Retry-After on a 503, which
// is never kept) are the retry's own.
var answerHeaders = []string{echo.HeaderContentType, "ETag", echo.HeaderLocation, "Preference-Applied", echo.HeaderWWWAuthenticate}

const idempotencyHeader = "Idempotency-Key"

// idempotent honours Idempotency-Key on a command: the first answer (below
// 500) is kept, and a retry with the same key and the same request gets it
// back without running the command again. A key reused for a different
// request is refused, and so is a retry while the first is still running.
//
// Keys are scoped by caller: the principal's user id, or one shared scope
// for anonymous requests (keys must be unguessable). The claim also names
// the caller's session, for replaySpent.
func (s *Server) idempotent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key := c.Request().Header.Get(idempotencyHeader)
		if key == "" {
			return next(c)
		}
		if err := checkKey(key); err != nil {
			return err
		}
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return bind(c, &struct{}{}, false) // reports the read error as a problem
		}
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		scope := actor(c) // anonymous requests share one scope: keys must be unguessable
		session := ""
		if p, ok := principal(c); ok {
			session = p.SessionID.String()
		}
		fingerprint, secret, err := requestFingerprint(c.Request(), body, session)
		if err != nil {
			return err
		}
		// A claimed key must reach a recorded outcome: the claim, the command
		// and its answer run to their end even when the client has gone away,
		// so that the client's retry finds the answer. Under the request's
		// context a disconnect could cut the claim's commit off after the
		// server made it (the claim is pending, the caller sees an error and
		// neither runs the command nor abandons the key: idempotency_key_in_use
		// until the claim's lease ends), abort the command, and fail
		// Finish/Abandon too.
		ctx := context.WithoutCancel(c.Request().Context())

		c.Set(idempotencyKey, scope+"\n"+key+"\n"+fingerprint)
		prev, err := s.q.BeginIdempotent(ctx, scope, key, fingerprint, session)
		if err != nil {
			return err
		}
		if prev != nil {
			switch {
			case prev.Fingerprint != fingerprint:
				return problem(http.StatusUnprocessableEntity, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
			case !prev.Done:
				return keyInUse()
			}
			return replay(c, prev)
		}

		c.SetRequest(c.Request().WithContext(ctx))

		rec := &recorder{ResponseWriter: c.Response().Writer}
		c.Response().Writer = rec
		err = next(c)
		if err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		// A failure is not kept, nor a refusal of a request that carried
		// a secret: the fingerprint leaves secrets out, so the retry that
		// corrects a mistyped password or token under the same key would
		// get the refusal back for good. A refusal wrote nothing (C07), so
		// running that retry is safe.
		if status >= 500 || status >= 400 && secret {
			if err := s.q.AbandonIdempotent(ctx, scope, key); err != nil {
				s.log.ErrorContext(ctx, "abandon idempotency key", "err", err)
			}
			return nil
		}
		header := map[string]string{}
		for _, name := range answerHeaders {
			if v := c.Response().Header().Get(name); v != "" {
				header[name] = v
			}
		}
		if err := s.q.FinishIdempotent(ctx, scope, key, status, header, redact(rec.buf.Bytes())); err != nil {
			s.log.ErrorContext(ctx, "keep idempotent response", "err", err)
		}
		return nil
	}
}

// keyInUse is a fresh problem each time: the error handler fills its Instance.
func keyInUse() error {
	return problem(http.StatusConflict, "idempotency_key_in_use", "a request with this Idempotency-Key is still being processed")
}

// replaySpent answers a keyed request whose bearer token no longer
// authenticates (refused is why) when it retries a command that token's own
// session sent. A command can end the very session that sent it (log out,
// revoke one's own session); its retry must still get the first answer
// rather than a 401 that reads as if nothing happened. (The session may also
// have ended by another's hand since: the answer it was given is still its.)
//
// The rule: the token must be one this service issued (its session exists
// and the secret matches: commands.TokenHolder), and the key must hold,
// under that token's user, a request with the same fingerprint claimed by
// that same session. Then the answer is replayed, or 409 while the first
// request is still running. Anything else — a token never issued, no such
// key, a key another session of the user claimed, another request, a row
// kept before sessions were recorded — gets the refusal the token earned,
// so a spent token reveals nothing it did not already receive and can run
// nothing. A token that does authenticate never comes here: idempotent
// handles it, scoped by user as always.
func (s *Server) replaySpent(c echo.Context, token string, refused error) error {
	ctx := c.Request().Context()
	userID, sessionID, err := s.cmd.TokenHolder(ctx, token)
	if errors.Is(err, commands.ErrUnauthenticated) {
		return refused
	}
	if err != nil {
		return err
	}
	key := c.Request().Header.Get(idempotencyHeader)
	if checkKey(key) != nil {
		return refused
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return refused
	}
	fingerprint, _, err := requestFingerprint(c.Request(), body, sessionID.String())
	if err != nil {
		return refused
	}
	prev, err := s.q.LookupIdempotent(ctx, userID.String(), key)
	if err != nil {
		return err
	}
	if prev == nil || prev.Session != sessionID.String() || prev.Fingerprint != fingerprint {
		return refused
	}
	if !prev.Done {
		return keyInUse()
	}
	return replay(c, prev)
}

// replay sends a kept answer again, with the headers it was first sent
// with. A row kept before headers were has none: its content type follows
// from its status (problems are the only error bodies).
func replay(c echo.Context, prev *readmodels.IdempotentResponse) error {
	h := c.Response().Header()
	for _, name := range answerHeaders {
		if v, ok := prev.Header[name]; ok {
			h.Set(name, v)
		}
	}
	ct := h.Get(echo.HeaderContentType)
	if ct == "" {
		ct = echo.MIMEApplicationJSON
		if prev.Status >= 400 {
			ct = problemJSON
		}
	}
	h.Set("Idempotent-Replayed", "true")
	return c.Blob(prev.Status, ct, prev.Body)
}

// checkKey refuses an Idempotency-Key that cannot be kept.
func checkKey(key string) error {
	if len(key) > 200 {
		return badParam(idempotencyHeader, "must be at most 200 characters")
	}
	// The key is stored as text: PostgreSQL refuses bytes that are not
	// UTF-8 (a header may carry any byte from 0x80 up), which would be
	// a 500 for the client's mistake.
	if !utf8.ValidString(key) || strings.ContainsFunc(key, unicode.IsControl) {
		return badParam(idempotencyHeader, "must be printable UTF-8")
	}
	return nil
}

const idempotencyKey = "evident.idempotency"

// requestFingerprint tells a keyed request's retries from another request:
// a hash of its method, path and body. A path that names the caller's own
// session (/sessions/current) is taken with that session's id, session: a
// logout from another session is another request. In the body, the value of
// every password-like secret field (a password, a current password) is
// replaced by one mark: the fingerprint is kept, and a registration's user
// id is derived from it (derivedID), which the log keeps forever, so a fast
// hash of a password there would undo bcrypt; a retry that changes only a
// password is taken as the same request. A token field (an activation
// token: 256 random bits, kept as its SHA-256 anyway) is taken as its
// SHA-256, so that a request without the token cannot pass for a retry of
// one that had it, and be answered with what the token gave. The body is
// hashed as the object it decodes to (keys in order, no spacing), and one
// that is not a single JSON object is refused here, before anything of it
// is kept. secret tells whether a secret field had a value.
func requestFingerprint(r *http.Request, body []byte, session string) (fingerprint string, secret bool, err error) {
	h := sha256.New()
	path := r.URL.Path
	if session != "" && strings.HasSuffix(path, "/sessions/current") {
		path = strings.TrimSuffix(path, "current") + session
	}
	h.Write([]byte(r.Method + " " + path + "\n"))
	if len(bytes.TrimSpace(body)) > 0 {
		if err := checkJSONType(r); err != nil {
			return "", false, err
		}
		var m map[string]json.RawMessage
		if err := decodeJSON(body, &m); err != nil {
			return "", false, err
		}
		// In key order: two spellings of one secret field must give one
		// fingerprint whichever the map yields first.
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if v := m[k]; secretField(k) {
				delete(m, k)
				if string(v) != "null" {
					secret = true
					if holdsWord(k, "token") {
						sum := sha256.Sum256(v)
						v = json.RawMessage(`"sha256:` + hex.EncodeToString(sum[:]) + `"`)
					} else {
						v = json.RawMessage(`"secret"`)
					}
				}
				m[strings.ToLower(k)] = v
			}
		}
		canonical, err := json.Marshal(m)
		if err != nil {
			return "", false, err
		}
		h.Write(canonical)
	}
	return hex.EncodeToString(h.Sum(nil)), secret, nil
}

// secretWords mark a request body's field as secret wherever they appear in
// its name: "password" and "current_password", but also a "newPassword" or
// "refresh_token" should one ever be added, without a list to keep up. A field taken for a
// secret by mistake only makes retries that differ in it count as one
// request; a secret missed would be kept in a fast hash.
var secretWords = []string{"password", "token", "secret"}

// secretField reports whether a request body's key names a secret: it holds
// one of secretWords, matched as encoding/json matches keys to fields,
// without regard to case (Unicode simple folding: "paſſword" is a password).
func secretField(key string) bool {
	for _, w := range secretWords {
		if holdsWord(key, w) {
			return true
		}
	}
	return false
}

// holdsWord reports whether key holds w, matched as encoding/json matches
// keys to fields, without regard to case (Unicode simple folding).
func holdsWord(key, w string) bool {
	r := []rune(key)
	n := utf8.RuneCountInString(w)
	for i := 0; i+n <= len(r); i++ {
		// Simple folding maps rune to rune, so a match has w's rune count.
		if strings.EqualFold(string(r[i:i+n]), w) {
			return true
		}
	}
	return false
}

// idNamespace derives the ids of resources a keyed request creates.
var idNamespace = uuid.MustParse("6f1c2a4e-8d0b-4c59-9e57-3b2f0d7a9c11")

// derivedID is the id a keyed request gives what it creates, the same on
// every retry of that request, so a retry that runs again after a crash
// finds the first attempt's work instead of doing it twice. Without a key it
// is uuid.Nil and the command picks a fresh id.
func derivedID(c echo.Context) uuid.UUID {
	v, ok := c.Get(idempotencyKey).(string)
	if !ok {
		return uuid.Nil
	}
	return uuid.NewSHA1(idNamespace, []byte(v))
}

// redact drops secret fields (secretField) from a JSON object body before
// it is kept for replay: raw tokens are shown once and never stored.
func redact(body []byte) []byte {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return body
	}
	changed := false
	for k := range m {
		if secretField(k) {
			delete(m, k)
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
