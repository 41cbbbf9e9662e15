package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"evident/commands"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/readmodels"

	"github.com/labstack/echo/v4"
)

// Problem is an RFC 9457 problem detail with Evident's stable code.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	Code     string `json:"code"`
	Field    string `json:"field,omitempty"`
	// Position is set on a 503 read_model_behind: what the query waited for.
	Position string `json:"position,omitempty"`
}

// Error implements error so handlers can return a Problem directly.
func (p *Problem) Error() string { return p.Code + ": " + p.Detail }

func problem(status int, code, detail string) *Problem {
	return &Problem{Type: "https://evident.dev/problems/" + code, Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// mapping is the one table from errors to problems, checked in order with
// errors.Is. Details are written for clients: no package names, no internals.
var mapping = []struct {
	err    error
	status int
	code   string
	detail string
}{
	{user.ErrNotFound, http.StatusNotFound, "user_not_found", "no user has that id"},
	{commands.ErrSessionNotFound, http.StatusNotFound, "session_not_found", "no session has that id"},
	{projections.ErrUnknownWorker, http.StatusNotFound, "worker_not_found", "no projection or workflow has that name"},
	{readmodels.ErrNotFound, http.StatusNotFound, "not_found", "nothing found"},
	{projections.ErrStillFailing, http.StatusConflict, "still_failing", ""},
	{user.ErrExists, http.StatusConflict, "user_exists", "the user exists already"},
	{user.ErrDeleted, http.StatusConflict, "user_deleted", "the user is deleted; nothing more can happen to it"},
	{user.ErrAlreadyActive, http.StatusConflict, "already_active", "the user is active already"},
	{user.ErrInvalidToken, http.StatusBadRequest, "invalid_token", "the token is unknown or no longer valid"},
	{user.ErrTokenExpired, http.StatusGone, "token_expired", "the token has expired; request a new one"},
	{user.ErrTokenUsed, http.StatusConflict, "token_used", "the token has been used already"},
	{user.ErrNotActive, http.StatusUnauthorized, "user_not_active", "the account is not active"},
	{commands.ErrEmailTaken, http.StatusConflict, "email_taken", "another user has that e-mail address"},
	{commands.ErrConflict, http.StatusConflict, "concurrency_conflict", "the user kept changing under the request; retry"},
	{commands.ErrPreconditionFailed, http.StatusPreconditionFailed, "precondition_failed", "the user changed since the ETag sent in If-Match"},
	{commands.ErrInvalidCredentials, http.StatusUnauthorized, "invalid_credentials", "e-mail or password is wrong"},
	// Not 401: the session is fine, and a client takes 401 for "log in again".
	{commands.ErrInvalidCurrentPassword, http.StatusForbidden, "invalid_current_password", "current_password is not your password"},
	{commands.ErrSelfLockout, http.StatusConflict, "self_lockout", "an admin cannot drop their own admin role, nor deactivate, suspend or delete themself; another admin can"},
	{commands.ErrCurrentPasswordRequired, http.StatusUnprocessableEntity, "current_password_required", "changing your own e-mail or password needs your current password in current_password"},
	{commands.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated", "the bearer token is missing, unknown or no longer valid"},
	{readmodels.ErrBadCursor, http.StatusBadRequest, "invalid_cursor", "the cursor is not one this list returned"},
	{eventstore.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large", "the change is larger than the store takes in one write"},
	{eventstore.ErrUnavailable, http.StatusServiceUnavailable, "unavailable", "the store is unavailable; retry"},
	{readmodels.ErrUnavailable, http.StatusServiceUnavailable, "unavailable", "the database is unavailable; retry"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", "the request took too long; retry"},
	{context.Canceled, http.StatusServiceUnavailable, "canceled", "the request was canceled"},
}

// toProblem maps any error to the problem a client sees.
func toProblem(err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var ve *user.ValidationError
	if errors.As(err, &ve) {
		pr := problem(http.StatusUnprocessableEntity, "validation_failed", ve.Error())
		pr.Field = ve.Field
		return pr
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return problem(he.Code, "route_not_found", "no such route")
		case http.StatusMethodNotAllowed:
			return problem(he.Code, "method_not_allowed", "method not allowed on this route")
		case http.StatusRequestEntityTooLarge:
			return problem(he.Code, "body_too_large", "request body exceeds the limit")
		case http.StatusUnsupportedMediaType:
			return problem(he.Code, "unsupported_media_type", "send application/json")
		case http.StatusUnauthorized:
			return problem(he.Code, "unauthenticated", "a valid bearer token is required")
		}
		if he.Code >= 400 && he.Code < 500 {
			return problem(he.Code, "bad_request", http.StatusText(he.Code))
		}
	}
	for _, m := range mapping {
		if errors.Is(err, m.err) {
			detail := m.detail
			if detail == "" {
				detail = err.Error()
			}
			p := problem(m.status, m.code, detail)
			if m.err == commands.ErrInvalidCurrentPassword || m.err == commands.ErrCurrentPasswordRequired {
				p.Field = "current_password"
			}
			return p
		}
	}
	return problem(http.StatusInternalServerError, "internal", "internal error")
}

const problemJSON = "application/problem+json"

// errorHandler is echo's HTTPErrorHandler: every error leaves as problem+json.
// Only our faults (5xx) are logged.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		p := toProblem(err)
		p.Instance = c.Request().URL.Path
		switch {
		case p.Status == http.StatusServiceUnavailable:
			log.WarnContext(c.Request().Context(), "request not served", "path", c.Path(), "code", p.Code, "request_id", requestID(c), "err", err)
		case p.Status >= 500:
			log.ErrorContext(c.Request().Context(), "request failed",
				"method", c.Request().Method, "path", c.Path(), "status", p.Status, "request_id", requestID(c), "err", err)
		}
		if p.Status == http.StatusServiceUnavailable {
			c.Response().Header().Set("Retry-After", "1")
		}
		if p.Status == http.StatusUnauthorized {
			c.Response().Header().Set("WWW-Authenticate", `Bearer realm="evident"`)
		}
		c.Response().Header().Set(echo.HeaderContentType, problemJSON)
		c.Response().WriteHeader(p.Status)
		_ = jsonEncode(c.Response(), p)
	}
}
