package processor

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"inboxd/internal/provider/registry"
)

type metrics struct {
	processed  *prometheus.CounterVec
	latency    prometheus.Histogram
	queueDepth *prometheus.GaugeVec
	// lanePending and laneOldest: the busiest lanes (LaneTop) and "other".
	lanePending *prometheus.GaugeVec
	laneOldest  *prometheus.GaugeVec
	listener    prometheus.Gauge
	pollOnly    prometheus.Gauge
	batchSize   prometheus.Histogram
	claims      *prometheus.CounterVec
	oldestAge   *prometheus.GaugeVec
	retained    *prometheus.CounterVec
	retention   *prometheus.GaugeVec
}

// NewMetrics registers the processor's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *metrics {
	m := newMetrics(reg)
	// Every series exists from the start, at zero, so that rate() and alerts see a
	// zero rather than nothing before the first event.
	for provider := range registry.Normalizers() {
		for _, result := range []string{"processed", "retry", "dead"} {
			m.processed.WithLabelValues(provider, result)
		}
	}
	for _, what := range []string{"processed_events", "dead_events", "parked_statuses"} {
		m.retained.WithLabelValues(what)
	}
	for _, outcome := range []string{"events", "empty", "handoff"} {
		m.claims.WithLabelValues(outcome)
	}
	for _, state := range States {
		m.oldestAge.WithLabelValues(state)
		if state != "processed" {
			m.queueDepth.WithLabelValues(state)
		}
	}
	return m
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		processed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_events_processed_total",
			Help: "Processing attempts finished, by provider and result (processed, retry, dead).",
		}, []string{"provider", "result"}),
		// Buckets from 1 ms (the normal case) to 5 min (retries with backoff): the
		// SC-001 figure is the 5 s bucket, our own target the 20 ms one.
		latency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "inbox_event_latency_seconds",
			Help:    "Time from an event's receipt (received_at) to its processed commit.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		queueDepth: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_queue_depth",
			Help: "Events in the queue by state (pending, processing, dead), sampled by the sweep.",
		}, []string{"state"}),
		lanePending: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_lane_pending",
			Help: "Pending events of the busiest lanes (provider/channel; the rest summed as lane=\"other\"), sampled by the sweep.",
		}, []string{"lane"}),
		laneOldest: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_lane_oldest_due_seconds",
			Help: "How long the longest-waiting due event of each of the busiest lanes (and of the rest, lane=\"other\") has been due, sampled by the sweep.",
		}, []string{"lane"}),
		listener: f.NewGauge(prometheus.GaugeOpts{
			Name: "inbox_listener_connected",
			Help: "1 while the LISTEN connection on channel inbound_events is up, else 0 (also in poll-only mode, which inbox_poll_only shows).",
		}),
		pollOnly: f.NewGauge(prometheus.GaugeOpts{
			Name: "inbox_poll_only",
			Help: "1 when this process runs without LISTEN by design (poll-only mode: the sweep drives processing), else 0.",
		}),
		oldestAge: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_queue_oldest_age_seconds",
			Help: "Age of the oldest event in each state (pending, processing, dead, processed: how far back retention has not reached), sampled by the sweep; 0 when the state is empty.",
		}, []string{"state"}),
		retained: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_retention_deleted_total",
			Help: "Rows deleted by retention, by what (processed_events, dead_events, parked_statuses).",
		}, []string{"what"}),
		retention: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_retention_seconds",
			Help: "The configured retention, by what it applies to (processed_events, dead_events); 0 when off.",
		}, []string{"what"}),
		claims: f.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_claims_total",
			Help: "Claim queries run, by outcome (events: it claimed some; empty: a wake-up found nothing); handoff: batches of this process's own commits, applied with no claim.",
		}, []string{"outcome"}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "inbox_process_batch_events",
			Help:    "Events applied per processing transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
	}
}
