package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"time"

	"evident/commands"
	"evident/eventstore"
	"evident/readmodels"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
)

// Queries is the read side the API serves from.
type Queries interface {
	User(ctx context.Context, id uuid.UUID) (readmodels.User, error)
	Users(ctx context.Context, f readmodels.UserFilter) (readmodels.Page[readmodels.User], error)
	Sessions(ctx context.Context, userID uuid.UUID, status, cursor string, limit int) (readmodels.Page[readmodels.Session], error)
	ActivationTokens(ctx context.Context, userID uuid.UUID, cursor string, limit int) (readmodels.Page[readmodels.ActivationToken], error)
	Audit(ctx context.Context, f readmodels.AuditFilter) (readmodels.Page[readmodels.AuditRecord], error)
	BeginIdempotent(ctx context.Context, scope, key, fingerprint, session string) (*readmodels.IdempotentResponse, error)
	LookupIdempotent(ctx context.Context, scope, key string) (*readmodels.IdempotentResponse, error)
	FinishIdempotent(ctx context.Context, scope, key string, status int, header map[string]string, body []byte) error
	AbandonIdempotent(ctx context.Context, scope, key string) error
}

// ReadSide reports how far the projections are and waits for them, and
// lets an operator deal with parked events.
type ReadSide interface {
	WaitFor(ctx context.Context, pos eventstore.Position) error
	Ready(ctx context.Context) error
	Status(ctx context.Context) any
	Parked(ctx context.Context) ([]readmodels.ParkedEvent, error)
	RetryParked(ctx context.Context, worker, eventID string) error
	SkipParked(ctx context.Context, worker, eventID string) error
}

// Options tune a Server; the zero value works.
type Options struct {
	// WaitTimeout bounds the read-your-writes wait (default 5s); past it a
	// command answers 202 with its position.
	WaitTimeout time.Duration
	// BodyLimit caps request bodies (default 64 KiB).
	BodyLimit int64
	Logger    *slog.Logger
	// Registry receives the API's metrics and is served at /metrics; nil
	// means a private registry.
	Registry *prometheus.Registry
}

// Server is the HTTP API.
type Server struct {
	cmd     *commands.Handler
	q       Queries
	read    ReadSide
	opts    Options
	log     *slog.Logger
	echo    *echo.Echo
	metrics *metrics
}

// NewServer builds the API with every route registered.
func NewServer(cmd *commands.Handler, q Queries, read ReadSide, opts Options) *Server {
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 5 * time.Second
	}
	if opts.BodyLimit <= 0 {
		opts.BodyLimit = 64 << 10
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	s := &Server{cmd: cmd, q: q, read: read, opts: opts, log: log, echo: echo.New(), metrics: newMetrics(opts.Registry)}
	s.echo.HideBanner, s.echo.HidePort = true, true
	s.echo.HTTPErrorHandler = errorHandler(log)
	s.echo.Use(dropBadRequestID, middleware.RequestID())
	s.echo.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		log.ErrorContext(c.Request().Context(), "panic", "err", err, "stack", string(stack))
		return err
	}}))
	s.echo.Use(s.metrics.count)
	s.echo.Use(s.limitBody)
	s.echo.Use(s.authenticate)
	s.Routes()
	return s
}

// ServeHTTP makes the Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Routes registers the whole surface, in one place.
func (s *Server) Routes() {
	e := s.echo
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", metricsHandler(s.opts.Registry))
	e.GET("/v1/workflows/status", s.workflowStatus, s.require(roleAdmin, roleAuditor))
	e.GET("/v1/workflows/parked", s.parked, s.require(roleAdmin, roleAuditor))
	e.POST("/v1/workflows/parked/:worker/:event_id/retry", s.retryParked, s.require(roleAdmin))
	e.POST("/v1/workflows/parked/:worker/:event_id/skip", s.skipParked, s.require(roleAdmin))

	v1 := e.Group("/v1")
	cmd := func(name, method, path string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
		mw = append([]echo.MiddlewareFunc{s.metrics.command(name)}, mw...)
		v1.Add(method, path, h, append(mw, s.idempotent)...)
	}
	cmd("register", http.MethodPost, "/users", s.register)
	cmd("update", http.MethodPatch, "/users/:id", s.update, s.require(roleAdmin, roleSelf))
	cmd("request_activation", http.MethodPost, "/users/:id/activation-requests", s.requestActivation, s.require(roleAdmin))
	cmd("activate_with_token", http.MethodPost, "/activations", s.activateWithToken)
	cmd("activate", http.MethodPost, "/users/:id/activate", s.activate, s.require(roleAdmin))
	cmd("deactivate", http.MethodPost, "/users/:id/deactivate", s.deactivate, s.require(roleAdmin))
	cmd("suspend", http.MethodPost, "/users/:id/suspend", s.suspend, s.require(roleAdmin))
	cmd("delete", http.MethodDelete, "/users/:id", s.deleteUser, s.require(roleAdmin))
	// A login is not replayed: its answer is a raw token, which is never
	// kept, and a replay without it would be no answer at all. A retried
	// login opens another session; an Idempotency-Key on it is ignored.
	v1.POST("/sessions", s.login, s.metrics.command("login"))
	cmd("logout", http.MethodDelete, "/sessions/current", s.logout, s.require(roleAny))
	cmd("revoke_session", http.MethodDelete, "/sessions/:id", s.revokeSession, s.require(roleAny))

	v1.GET("/users", s.listUsers, s.require(roleAdmin, roleAuditor))
	v1.GET("/users/:id", s.getUser, s.require(roleAdmin, roleAuditor, roleSelf))
	v1.GET("/users/:id/sessions", s.listSessions, s.require(roleAdmin, roleAuditor, roleSelf))
	v1.GET("/users/:id/activation-tokens", s.listActivationTokens, s.require(roleAdmin, roleAuditor))
	v1.GET("/users/:id/events", s.userEvents, s.require(roleAdmin, roleAuditor))
	v1.GET("/users/:id/state", s.userState, s.require(roleAdmin, roleAuditor))
	v1.GET("/audit", s.audit, s.require(roleAdmin, roleAuditor))
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if err := s.read.Ready(c.Request().Context()); err != nil {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "not_ready", "reason": err.Error()})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) workflowStatus(c echo.Context) error {
	return c.JSON(http.StatusOK, s.read.Status(c.Request().Context()))
}

func (s *Server) parked(c echo.Context) error {
	items, err := s.read.Parked(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// retryParked handles a parked event again; it stays parked if it fails again.
func (s *Server) retryParked(c echo.Context) error {
	if err := s.read.RetryParked(c.Request().Context(), c.Param("worker"), c.Param("event_id")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "retried", "worker": c.Param("worker"), "event_id": c.Param("event_id")})
}

// skipParked gives up on a parked event; the event stays in the log.
func (s *Server) skipParked(c echo.Context) error {
	if err := s.read.SkipParked(c.Request().Context(), c.Param("worker"), c.Param("event_id")); err != nil {
		return err
	}
	s.log.WarnContext(c.Request().Context(), "parked event skipped", "worker", c.Param("worker"), "event_id", c.Param("event_id"), "actor_id", actor(c))
	return c.JSON(http.StatusOK, map[string]string{"status": "skipped", "worker": c.Param("worker"), "event_id": c.Param("event_id")})
}

// limitBody refuses bodies over the limit with 413, whether announced by
// Content-Length or discovered while reading.
func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.opts.BodyLimit {
			return problem(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds the limit")
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.opts.BodyLimit)
		return next(c)
	}
}

func requestID(c echo.Context) string {
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// dropBadRequestID removes a client's X-Request-Id that is not a traceID,
// so that the server makes one: the request id is echoed back and stored in
// the metadata of every event the request appends, kept forever.
func dropBadRequestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Request().Header
		if v, ok := h[echo.HeaderXRequestID]; ok && (len(v) != 1 || !traceID(v[0])) {
			h.Del(echo.HeaderXRequestID)
		}
		return next(c)
	}
}

// traceID reports whether a client's request or correlation id may be
// kept: 1 to 128 printable ASCII characters, no space.
func traceID(v string) bool {
	if v == "" || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
