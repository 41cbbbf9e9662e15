package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"evident/eventstore"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// bind reads a JSON request body into dst. An empty body is allowed only when
// required is false, leaving dst as it was.
func bind(c echo.Context, dst any, required bool) error {
	r := c.Request()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return problem(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the limit")
		}
		return problem(http.StatusBadRequest, "unreadable_body", "could not read the request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if required {
			return problem(http.StatusBadRequest, "empty_body", "a JSON object body is required")
		}
		return nil
	}
	if err := checkJSONType(r); err != nil {
		return err
	}
	return decodeJSON(body, dst)
}

// checkJSONType refuses a body declared as anything but JSON; a body with no
// Content-Type is taken as JSON.
func checkJSONType(r *http.Request) error {
	if ct := r.Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		}
	}
	return nil
}

// decodeJSON decodes exactly one JSON object into dst, refusing unknown
// fields, wrong types and trailing data, with a problem a client can act on.
func decodeJSON(body []byte, dst any) error {
	if !utf8.Valid(body) {
		// encoding/json would read each bad byte as U+FFFD and store that.
		return problem(http.StatusBadRequest, "malformed_json", "the body is not valid UTF-8")
	}
	if k, ok := repeatedKey(body); ok {
		p := problem(http.StatusBadRequest, "duplicate_field",
			fmt.Sprintf("field %q is given more than once (field names match without regard to case)", k))
		p.Field = k
		return p
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return problem(http.StatusBadRequest, "malformed_json", "the body must hold exactly one JSON object")
	}
	return nil
}

// repeatedKey finds a key of a top-level JSON object that another key of it
// matches as encoding/json matches keys to fields, without regard to case:
// the decoder would let the last one win, so {"name":"A","NAME":"B"} would
// set B while reading as A. A body that is not an object is left to the
// decoder.
func repeatedKey(body []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	var seen []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		k, _ := t.(string)
		for _, s := range seen {
			if strings.EqualFold(s, k) {
				return k, true
			}
		}
		seen = append(seen, k)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

func decodeProblem(err error) *Problem {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return problem(http.StatusBadRequest, "malformed_json", "the body is not valid JSON")
	case errors.As(err, &typ):
		p := problem(http.StatusBadRequest, "invalid_type", fmt.Sprintf("field %q must be %s", typ.Field, typ.Type.Kind()))
		p.Field = typ.Field
		if typ.Field == "" {
			p.Detail = "the body must be a JSON object"
		}
		return p
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		p := problem(http.StatusBadRequest, "unknown_field", fmt.Sprintf("unknown field %q", field))
		p.Field = field
		return p
	}
	return problem(http.StatusBadRequest, "malformed_json", "the body is not valid JSON")
}

// pathID parses the :id path parameter.
func pathID(c echo.Context) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil || len(c.Param("id")) != 36 {
		p := problem(http.StatusBadRequest, "invalid_id", "the id in the path is not a UUID")
		p.Field = "id"
		return uuid.Nil, p
	}
	return id, nil
}

// ifMatch reads If-Match as a stream version; absent or "*" means
// unconditional. It takes one ETag as this API sends them ("7"). If-Match
// compares strongly (RFC 9110 §13.1.1), so a weak tag (W/"7") matches no
// version: the command fails its precondition, as for a version the stream
// has left.
func ifMatch(c echo.Context) (*int64, error) {
	h := strings.TrimSpace(c.Request().Header.Get("If-Match"))
	if h == "" || h == "*" {
		return nil, nil
	}
	tag, weak := strings.CutPrefix(h, "W/")
	digits, quoted := strings.CutPrefix(tag, `"`)
	digits, closed := strings.CutSuffix(digits, `"`)
	v, err := strconv.ParseInt(digits, 10, 64)
	if !quoted || !closed || err != nil || v < 0 {
		return nil, problem(http.StatusBadRequest, "invalid_if_match", `If-Match must be one ETag this API returned, e.g. "7"`)
	}
	if weak {
		never := noVersion
		return &never, nil
	}
	return &v, nil
}

// noVersion is a version no stream is ever at (eventstore.NoStream is -1).
const noVersion int64 = -3

func etag(version int64) string { return `"` + strconv.FormatInt(version, 10) + `"` }

// queryLimit reads ?limit (1..500; absent means the default).
func queryLimit(c echo.Context) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 500 {
		return 0, badParam("limit", "must be a whole number from 1 to 500")
	}
	return n, nil
}

// queryTime reads an RFC 3339 instant with an explicit offset.
func queryTime(c echo.Context, name string) (time.Time, error) {
	s := c.QueryParam(name)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badParam(name, "must be an RFC 3339 time with an offset, e.g. 2026-01-02T15:04:05Z (write + as %2B)")
	}
	if t.Before(time.Unix(0, 0)) {
		// Also keeps Go's zero time, which means "not given", out of filters.
		return time.Time{}, badParam(name, "must not be before 1970-01-01T00:00:00Z")
	}
	return t.UTC(), nil
}

// queryText reads a free-text filter; it must be valid UTF-8 without control
// characters (a database would refuse a NUL with an error, not an empty answer).
func queryText(c echo.Context, name string) (string, error) {
	s := c.QueryParam(name)
	if len(s) > 320 || !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
		return "", badParam(name, "must be printable UTF-8 of at most 320 bytes")
	}
	return s, nil
}

// queryPosition reads ?after=<position>.
func queryPosition(c echo.Context) (eventstore.Position, bool, error) {
	s := c.QueryParam("after")
	if s == "" {
		return eventstore.Position{}, false, nil
	}
	p, err := eventstore.ParsePosition(s)
	if err != nil {
		return eventstore.Position{}, false, badParam("after", "must be a position this API returned")
	}
	return p, true, nil
}

func badParam(name, reason string) *Problem {
	p := problem(http.StatusBadRequest, "invalid_parameter", name+" "+reason)
	p.Field = name
	return p
}
