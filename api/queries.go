package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"evident/domain/user"
	"evident/projections"
	"evident/readmodels"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// caughtUp honours ?after=<position>: it waits (bounded) until the read
// models have processed that position, so a client can read what another
// instance wrote.
func (s *Server) caughtUp(c echo.Context) error {
	pos, ok, err := queryPosition(c)
	if err != nil || !ok {
		return err
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.opts.WaitTimeout)
	defer cancel()
	if err := s.read.WaitFor(ctx, pos); err != nil {
		p := problem(http.StatusServiceUnavailable, "read_model_behind", "the read models have not reached that position yet")
		p.Position = pos.String()
		return p
	}
	return nil
}

func (s *Server) getUser(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	if err := s.caughtUp(c); err != nil {
		return err
	}
	u, err := s.q.User(c.Request().Context(), id)
	if errors.Is(err, readmodels.ErrNotFound) {
		return user.ErrNotFound
	}
	if err != nil {
		return err
	}
	c.Response().Header().Set("ETag", etag(u.Version))
	return c.JSON(http.StatusOK, u)
}

func (s *Server) listUsers(c echo.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	if err := s.caughtUp(c); err != nil {
		return err
	}
	f := readmodels.UserFilter{Status: c.QueryParam("status"), Cursor: c.QueryParam("cursor"), Limit: limit}
	email, err := queryText(c, "email")
	if err != nil {
		return err
	}
	switch f.Status {
	case "", "pending", "active", "inactive", "suspended", "deleted":
	default:
		return badParam("status", "must be one of pending, active, inactive, suspended, deleted")
	}
	if email != "" {
		f.Email = normalizeQueryEmail(email)
	}
	page, err := s.q.Users(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) listSessions(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	status := c.QueryParam("status")
	switch status {
	case "", "open", "expired", "logged_out", "revoked":
	default:
		return badParam("status", "must be one of open, expired, logged_out, revoked")
	}
	if err := s.caughtUp(c); err != nil {
		return err
	}
	page, err := s.q.Sessions(c.Request().Context(), id, status, c.QueryParam("cursor"), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) listActivationTokens(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	if err := s.caughtUp(c); err != nil {
		return err
	}
	page, err := s.q.ActivationTokens(c.Request().Context(), id, c.QueryParam("cursor"), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) userEvents(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	return s.auditPage(c, &id)
}

func (s *Server) audit(c echo.Context) error {
	var uid *uuid.UUID
	if v := c.QueryParam("user_id"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return badParam("user_id", "must be a UUID")
		}
		uid = &id
	}
	return s.auditPage(c, uid)
}

// auditPage serves the audit trail in log order (order=desc for newest
// first). from is inclusive and to exclusive, both RFC 3339 instants.
func (s *Server) auditPage(c echo.Context, uid *uuid.UUID) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	from, err := queryTime(c, "from")
	if err != nil {
		return err
	}
	to, err := queryTime(c, "to")
	if err != nil {
		return err
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		p := problem(http.StatusBadRequest, "invalid_time_range", "from must be before to (from is inclusive, to exclusive)")
		p.Field = "from"
		return p
	}
	actorID, err := queryText(c, "actor_id")
	if err != nil {
		return err
	}
	if a := c.QueryParam("action"); a != "" && !projections.IsAction(a) {
		return badParam("action", "is not an audit action (e.g. user_created, user_logged_in, session_revoked)")
	}
	desc := false
	switch c.QueryParam("order") {
	case "", "asc":
	case "desc":
		desc = true
	default:
		return badParam("order", "must be asc or desc")
	}
	if err := s.caughtUp(c); err != nil {
		return err
	}
	page, err := s.q.Audit(c.Request().Context(), readmodels.AuditFilter{
		UserID: uid, ActorID: actorID, Action: c.QueryParam("action"),
		From: from, To: to, Cursor: c.QueryParam("cursor"), Limit: limit, Desc: desc,
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

// stateView is a user folded from its stream up to a time.
type stateView struct {
	ID      uuid.UUID `json:"id"`
	Email   string    `json:"email"`
	Name    string    `json:"name"`
	Roles   []string  `json:"roles"`
	Status  string    `json:"status"`
	Version int64     `json:"version"`
	At      any       `json:"at"`
}

func (s *Server) userState(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	at, err := queryTime(c, "at")
	if err != nil {
		return err
	}
	st, version, err := s.cmd.UserState(c.Request().Context(), id, at)
	if err != nil {
		return err
	}
	var atv any
	if !at.IsZero() {
		atv = at
	}
	return c.JSON(http.StatusOK, stateView{ID: st.ID, Email: st.Email, Name: st.Name, Roles: st.Roles, Status: string(st.Status), Version: version, At: atv})
}

func normalizeQueryEmail(raw string) string {
	if addr, err := user.NormalizeEmail(raw); err == nil {
		return addr
	}
	return strings.ToLower(strings.TrimSpace(raw))
}
