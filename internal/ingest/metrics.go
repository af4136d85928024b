package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"inboxd/internal/provider/registry"
)

type metrics struct {
	requests   *prometheus.CounterVec
	events     *prometheus.CounterVec
	batchSize  prometheus.Histogram
	ackLatency *prometheus.HistogramVec
	logDropped prometheus.Counter
	inFlight   prometheus.Gauge
	bodyBytes  prometheus.Gauge
}

// NewMetrics registers ingest's metrics with reg. Every provider's series exist from
// the start, at zero, so that rate() and alerts see a zero rather than nothing.
func NewMetrics(reg prometheus.Registerer) *metrics {
	m := newMetrics(reg)
	for _, provider := range registry.Names() {
		m.requests.WithLabelValues(provider, "200")
		m.requests.WithLabelValues(provider, "503")
		m.events.WithLabelValues(provider, "new")
		m.events.WithLabelValues(provider, "duplicate")
		m.ackLatency.WithLabelValues(provider)
	}
	return m
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_ingest_requests_total",
			Help: "Webhook requests answered, by provider and HTTP status code.",
		}, []string{"provider", "code"}),
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_events_ingested_total",
			Help: "Events acknowledged, by provider and result (new or duplicate).",
		}, []string{"provider", "result"}),
		ackLatency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "inbox_ingest_ack_seconds",
			Help:    "Time from a webhook's arrival to its 2xx answer (its events committed), by provider.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"provider"}),
		logDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "inbox_log_lines_dropped_total",
			Help: "Log lines about rejected webhooks left out by the rate limit (at most 20 a second of each kind are written).",
		}),
		inFlight: f.NewGauge(prometheus.GaugeOpts{
			Name: "inbox_ingest_in_flight",
			Help: "Webhook requests being handled now (their bodies being read or their commits awaited); past the in-flight limit more are refused with 503.",
		}),
		bodyBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "inbox_ingest_body_bytes",
			Help: "Bytes reserved for the bodies of webhook requests in flight (their announced lengths); past the body memory limit more are refused with 503.",
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "inbox_ingest_commit_requests",
			Help:    "Webhook requests committed together in one transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
	}
}
