package main

import (
	"context"
	"time"

	"evident/eventstore"
	"evident/projections"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// lagWindow caps how many events a lag measurement reads; a worker further
// behind reports lagWindow events.
const lagWindow = 1000

// lagSource reads the log after a position.
type lagSource interface {
	ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error)
}

// lag says how far a worker at pos is behind the log: events (up to
// lagWindow) and the age of the oldest event it has not processed.
func lag(ctx context.Context, src lagSource, pos eventstore.Position, now time.Time) (events int, age time.Duration, err error) {
	evs, err := src.ReadAll(ctx, pos, lagWindow)
	if err != nil || len(evs) == 0 {
		return 0, 0, err
	}
	return len(evs), max(now.Sub(evs[0].RecordedAt), 0), nil
}

// workerCollector exposes the projections' and workflows' progress at scrape time.
type workerCollector struct {
	runner                                               *projections.Runner
	src                                                  lagSource
	pos, lagEvents, lagSeconds, parked, failing, running *prometheus.Desc
}

func newWorkerCollector(r *projections.Runner, src lagSource) *workerCollector {
	l := []string{"name", "kind"}
	return &workerCollector{
		runner:     r,
		src:        src,
		pos:        prometheus.NewDesc("evident_worker_position", "Last position a projection or workflow processed (commit part).", l, nil),
		lagEvents:  prometheus.NewDesc("evident_worker_lag_events", "Events not yet processed (capped at 1000).", l, nil),
		lagSeconds: prometheus.NewDesc("evident_worker_lag_seconds", "Age of the oldest event not yet processed.", l, nil),
		parked:     prometheus.NewDesc("evident_worker_parked_events", "Events parked after failing every retry.", l, nil),
		failing:    prometheus.NewDesc("evident_worker_failing", "1 while the latest attempt failed.", l, nil),
		running:    prometheus.NewDesc("evident_worker_running", "1 while the worker runs in this process.", l, nil),
	}
}

func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pos, c.lagEvents, c.lagSeconds, c.parked, c.failing, c.running} {
		ch <- d
	}
}

func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := time.Now()
	for _, s := range c.runner.Status() {
		lv := []string{s.Name, s.Kind}
		ch <- prometheus.MustNewConstMetric(c.pos, prometheus.GaugeValue, float64(s.Position.Commit), lv...)
		ch <- prometheus.MustNewConstMetric(c.parked, prometheus.GaugeValue, float64(s.Parked), lv...)
		ch <- prometheus.MustNewConstMetric(c.failing, prometheus.GaugeValue, boolGauge(s.LastError != ""), lv...)
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, boolGauge(s.Running), lv...)
		if n, age, err := lag(ctx, c.src, s.Position, now); err == nil {
			ch <- prometheus.MustNewConstMetric(c.lagEvents, prometheus.GaugeValue, float64(n), lv...)
			ch <- prometheus.MustNewConstMetric(c.lagSeconds, prometheus.GaugeValue, age.Seconds(), lv...)
		}
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// newRegistry holds the process, Go runtime and Evident's own metrics.
func newRegistry() (*prometheus.Registry, *prometheus.CounterVec) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	appended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "evident_events_appended_total",
		Help: "Events appended by this process, by type (auth.session_revoked counts revoked sessions, user.activation_requested issued tokens, …).",
	}, []string{"type"})
	reg.MustRegister(appended)
	return reg, appended
}
