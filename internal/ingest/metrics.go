package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	requests  *prometheus.CounterVec
	events    *prometheus.CounterVec
	batchSize prometheus.Histogram
}

// NewMetrics registers ingest's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *metrics {
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
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "inbox_ingest_commit_requests",
			Help:    "Webhook requests committed together in one transaction (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
	}
}
