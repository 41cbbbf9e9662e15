package api

import (
	"context"

	"net/http"
	"strings"
	"time"

	"evident/commands"
	"evident/domain/user"
	"evident/eventstore"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// Request bodies. Pointer fields tell "absent" from "empty".
type (
	registerRequest struct {
		Email    string   `json:"email"`
		Name     string   `json:"name"`
		Password string   `json:"password"`
		Roles    []string `json:"roles"`
	}
	updateRequest struct {
		Email    *string  `json:"email"`
		Name     *string  `json:"name"`
		Roles    []string `json:"roles"`
		Password *string  `json:"password"`
		// CurrentPassword proves a change of one's own e-mail or password.
		CurrentPassword *string `json:"current_password"`
	}
	activationRequest struct {
		Token    string  `json:"token"`
		Password *string `json:"password"`
	}
	reasonRequest struct {
		Reason string `json:"reason"`
	}
	loginRequest struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
)

// userView is a user as a command answers it: from the write side, so it is
// exact whatever the read models' lag.
type userView struct {
	ID       uuid.UUID           `json:"id"`
	Email    string              `json:"email"`
	Name     string              `json:"name"`
	Roles    []string            `json:"roles"`
	Status   user.Status         `json:"status"`
	Version  int64               `json:"version"`
	Position eventstore.Position `json:"position"`
}

func (s *Server) meta(c echo.Context) commands.Meta {
	rid := requestID(c)
	corr := c.Request().Header.Get("X-Correlation-ID")
	if !traceID(corr) {
		corr = rid
	}
	m := commands.Meta{ActorID: actor(c), CorrelationID: corr, RequestID: rid}
	if p, ok := principal(c); ok {
		m.SessionID = p.SessionID
	}
	return m
}

// answer waits until the read side has processed pos (unless the client
// prefers not to wait) and writes the response. A wait that times out turns
// the answer into 202 Accepted: the command is stored, the views lag.
func (s *Server) answer(c echo.Context, status int, pos eventstore.Position, version int64, body any) error {
	if version >= 0 {
		c.Response().Header().Set("ETag", etag(version))
	}
	if !pos.IsZero() {
		if strings.Contains(strings.ToLower(c.Request().Header.Get("Prefer")), "respond-async") {
			c.Response().Header().Set("Preference-Applied", "respond-async")
		} else {
			ctx, cancel := context.WithTimeout(c.Request().Context(), s.opts.WaitTimeout)
			err := s.read.WaitFor(ctx, pos)
			cancel()
			if err != nil {
				if c.Request().Context().Err() != nil {
					return c.Request().Context().Err()
				}
				status = http.StatusAccepted
			}
		}
	}
	return c.JSON(status, body)
}

func (s *Server) answerUser(c echo.Context, status int, res commands.Result) error {
	// The command's own result is the stream at its version: no second read.
	st, version := res.User, res.Version
	if !st.Exists {
		var err error
		if st, version, err = s.cmd.UserState(c.Request().Context(), res.UserID, time.Time{}); err != nil {
			return err
		}
	}
	v := userView{ID: st.ID, Email: st.Email, Name: st.Name, Roles: st.Roles, Status: st.Status, Version: version, Position: res.Position}
	return s.answer(c, status, res.Position, version, v)
}

func (s *Server) register(c echo.Context) error {
	var req registerRequest
	if err := bind(c, &req, true); err != nil {
		return err
	}
	if len(req.Roles) > 0 && !isAdmin(c) && !(len(req.Roles) == 1 && req.Roles[0] == user.RoleMember) {
		return problem(http.StatusForbidden, "forbidden", "only an admin may assign roles")
	}
	res, err := s.cmd.Register(c.Request().Context(), s.meta(c),
		commands.RegisterInput{Email: req.Email, Name: req.Name, Password: req.Password, Roles: req.Roles, UserID: derivedID(c)})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/users/"+res.UserID.String())
	return s.answerUser(c, http.StatusCreated, res)
}

func (s *Server) update(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	var req updateRequest
	if err := bind(c, &req, true); err != nil {
		return err
	}
	if req.Roles != nil && !isAdmin(c) {
		return problem(http.StatusForbidden, "forbidden", "only an admin may change roles")
	}
	in := commands.UpdateInput{Email: req.Email, Name: req.Name, Roles: req.Roles, Password: req.Password}
	if req.CurrentPassword != nil {
		in.CurrentPassword = *req.CurrentPassword
	}
	res, err := s.cmd.Update(c.Request().Context(), s.meta(c), id, in, match)
	if err != nil {
		return err
	}
	return s.answerUser(c, http.StatusOK, res)
}

func (s *Server) requestActivation(c echo.Context) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	if err := bind(c, &struct{}{}, false); err != nil {
		return err
	}
	tok, err := s.cmd.RequestActivation(c.Request().Context(), s.meta(c), id, match)
	if err != nil {
		return err
	}
	return s.answer(c, http.StatusCreated, tok.Position, tok.Version, map[string]any{
		"user_id": id, "token": tok.Token, "expires_at": tok.ExpiresAt, "position": tok.Position,
	})
}

func (s *Server) activateWithToken(c echo.Context) error {
	var req activationRequest
	if err := bind(c, &req, true); err != nil {
		return err
	}
	if req.Token == "" {
		return &Problem{Type: "https://evident.dev/problems/validation_failed", Title: "Unprocessable Entity",
			Status: http.StatusUnprocessableEntity, Code: "validation_failed", Field: "token", Detail: "token is required"}
	}
	res, err := s.cmd.ActivateWithToken(c.Request().Context(), s.meta(c), req.Token, req.Password)
	if err != nil {
		return err
	}
	return s.answerUser(c, http.StatusOK, res)
}

func (s *Server) activate(c echo.Context) error {
	return s.lifecycle(c, func(ctx context.Context, m commands.Meta, id uuid.UUID, _ string, match *int64) (commands.Result, error) {
		return s.cmd.Activate(ctx, m, id, user.MethodAdmin, match)
	})
}

func (s *Server) deactivate(c echo.Context) error { return s.lifecycle(c, s.cmd.Deactivate) }
func (s *Server) suspend(c echo.Context) error    { return s.lifecycle(c, s.cmd.Suspend) }
func (s *Server) deleteUser(c echo.Context) error { return s.lifecycle(c, s.cmd.Delete) }

// lifecycle is the shape shared by activate, deactivate, suspend and delete:
// an id in the path, an optional {reason} body, an optional If-Match.
func (s *Server) lifecycle(c echo.Context, run func(context.Context, commands.Meta, uuid.UUID, string, *int64) (commands.Result, error)) error {
	id, err := pathID(c)
	if err != nil {
		return err
	}
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	var req reasonRequest
	if err := bind(c, &req, false); err != nil {
		return err
	}
	res, err := run(c.Request().Context(), s.meta(c), id, req.Reason, match)
	if err != nil {
		return err
	}
	return s.answerUser(c, http.StatusOK, res)
}

func (s *Server) login(c echo.Context) error {
	var req loginRequest
	if err := bind(c, &req, true); err != nil {
		return err
	}
	ns, err := s.cmd.Login(c.Request().Context(), s.meta(c), req.Email, req.Password)
	if err != nil {
		return err
	}
	return s.answer(c, http.StatusCreated, ns.Position, 0, map[string]any{
		"token": ns.Token, "session_id": ns.SessionID, "user_id": ns.UserID, "expires_at": ns.ExpiresAt, "position": ns.Position,
	})
}

func (s *Server) logout(c echo.Context) error {
	p, _ := principal(c)
	if err := bind(c, &struct{}{}, false); err != nil {
		return err
	}
	res, err := s.cmd.Logout(c.Request().Context(), s.meta(c), p.SessionID)
	if err != nil {
		return err
	}
	return s.answer(c, http.StatusOK, res.Position, res.Version, map[string]any{
		"session_id": p.SessionID, "status": "logged_out", "position": res.Position,
	})
}

func (s *Server) revokeSession(c echo.Context) error {
	sid, err := pathID(c)
	if err != nil {
		return err
	}
	var req reasonRequest
	if err := bind(c, &req, false); err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner, err := s.cmd.SessionOwner(ctx, sid)
	if err != nil {
		return err
	}
	if p, _ := principal(c); owner != p.UserID && !isAdmin(c) {
		// Someone else's session is none of your business: do not confirm it exists.
		return commands.ErrSessionNotFound
	}
	res, err := s.cmd.RevokeSession(ctx, s.meta(c), sid, req.Reason)
	if err != nil {
		return err
	}
	return s.answer(c, http.StatusOK, res.Position, res.Version, map[string]any{
		"session_id": sid, "status": "revoked", "position": res.Position,
	})
}
