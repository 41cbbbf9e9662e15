package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the API's own instruments.
type metrics struct {
	commands *prometheus.HistogramVec
	requests *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		commands: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "evident_command_duration_seconds",
			Help:    "Latency of commands over HTTP, by command and outcome (ok or the problem code).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"command", "outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "evident_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
	}
	reg.MustRegister(m.commands, m.requests)
	return m
}

// count records every request by its route pattern (never the raw path, so
// ids do not explode the label set).
func (m *metrics) count(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		status := c.Response().Status
		if err != nil {
			status = toProblem(err).Status
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, methodLabel(c.Request().Method), strconv.Itoa(status)).Inc()
		return err
	}
}

// command times one command and labels it with its outcome.
func (m *metrics) command(name string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			outcome := "ok"
			if err != nil {
				outcome = toProblem(err).Code
			} else if c.Response().Status >= 400 {
				outcome = "error"
			}
			m.commands.WithLabelValues(name, outcome).Observe(time.Since(start).Seconds())
			return err
		}
	}
}

func metricsHandler(g prometheus.Gatherer) echo.HandlerFunc {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return echo.WrapHandler(h)
}

// methodLabel is a request's method as a metric label: any method HTTP
// does not define is "other", so that clients cannot add series at will.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}
