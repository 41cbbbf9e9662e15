package api

import (
	"errors"
	"net/http"
	"strings"

	"evident/commands"
	"evident/domain/user"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

type role int

const (
	roleAny role = iota
	roleAdmin
	roleAuditor
	roleSelf // the principal is the user named by the :id path parameter
)

const principalKey = "evident.principal"

// authenticate resolves a bearer token, when one is sent, into a principal.
// A token that does not verify is refused even on public routes: a client
// that believes it is logged in must learn that it is not.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		if h == "" {
			return next(c)
		}
		scheme, token, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return problem(http.StatusUnauthorized, "unauthenticated", "use Authorization: Bearer <token>")
		}
		token = strings.TrimSpace(token)
		p, err := s.cmd.Authenticate(c.Request().Context(), token)
		if errors.Is(err, commands.ErrUnauthenticated) && c.Request().Header.Get(idempotencyHeader) != "" {
			// The retry of a command that spent this very token: see replaySpent.
			return s.replaySpent(c, token, err)
		}
		if err != nil {
			return err
		}
		c.Set(principalKey, p)
		return next(c)
	}
}

func principal(c echo.Context) (commands.Principal, bool) {
	p, ok := c.Get(principalKey).(commands.Principal)
	return p, ok
}

// actor is the id stamped on events: the principal's user id, or empty for
// an anonymous request (the command then names the actor it can vouch for).
func actor(c echo.Context) string {
	if p, ok := principal(c); ok {
		return p.UserID.String()
	}
	return ""
}

// require lets a request through when the principal satisfies any of roles.
func (s *Server) require(roles ...role) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p, ok := principal(c)
			if !ok {
				return problem(http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
			}
			for _, r := range roles {
				switch {
				case r == roleAny,
					r == roleAdmin && p.HasRole(user.RoleAdmin),
					r == roleAuditor && p.HasRole(user.RoleAuditor),
					r == roleSelf && isSelf(c, p):
					return next(c)
				}
			}
			return problem(http.StatusForbidden, "forbidden", "your roles do not allow this")
		}
	}
}

func isAdmin(c echo.Context) bool {
	p, ok := principal(c)
	return ok && p.HasRole(user.RoleAdmin)
}

// isSelf reports whether the :id path parameter names the principal, in
// any spelling uuid.Parse accepts.
func isSelf(c echo.Context, p commands.Principal) bool {
	id, err := uuid.Parse(c.Param("id"))
	return err == nil && id == p.UserID
}
