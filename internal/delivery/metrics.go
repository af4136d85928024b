package delivery

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the delivery metrics, per subscription (label subscription: its id;
// there are as many as the operator made).
type Metrics struct {
	attempts  *prometheus.CounterVec
	latency   prometheus.Histogram
	lag       *prometheus.GaugeVec
	fannedOut prometheus.Counter
	mu        sync.Mutex
	known     map[string]bool // subscriptions with a lag series
}

// NewMetrics registers the delivery metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inbox_deliveries_total",
			Help: "Delivery attempts to subscribers' endpoints by outcome: delivered, retry (failed, to be tried again) or dead (given up).",
		}, []string{"subscription", "result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "inbox_delivery_latency_seconds",
			Help:    "From a change's commit to its delivery's 2xx, first attempts and retries alike.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600},
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "inbox_delivery_lag_seconds",
			Help: "Age of each subscription's oldest undelivered change (0 when none), read at each sweep.",
		}, []string{"subscription"}),
		fannedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inbox_changes_fanned_out_total",
			Help: "Changes read by the fan-out to subscriptions, summed over subscriptions.",
		}),
		known: map[string]bool{},
	}
	reg.MustRegister(m.attempts, m.latency, m.lag, m.fannedOut)
	return m
}

func (m *Metrics) observe(c claimed, r result, now time.Time) {
	sub := strconv.FormatInt(c.Subscription, 10)
	switch {
	case r.err == "":
		m.attempts.WithLabelValues(sub, "delivered").Inc()
		m.latency.Observe(now.Sub(c.OccurredAt).Seconds())
	case r.retry:
		m.attempts.WithLabelValues(sub, "retry").Inc()
	default:
		m.attempts.WithLabelValues(sub, "dead").Inc()
	}
}

// readLag sets the lag gauges from the database and drops the series of
// subscriptions that are gone.
func (m *Metrics) readLag(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, lagSQL)
	if err != nil {
		return err
	}
	var id int64
	var lag float64
	seen := map[string]bool{}
	if _, err := pgx.ForEachRow(rows, []any{&id, &lag}, func() error {
		sub := strconv.FormatInt(id, 10)
		seen[sub] = true
		m.lag.WithLabelValues(sub).Set(lag)
		return nil
	}); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for sub := range m.known {
		if !seen[sub] {
			m.lag.DeleteLabelValues(sub)
			m.attempts.DeleteLabelValues(sub, "delivered")
			m.attempts.DeleteLabelValues(sub, "retry")
			m.attempts.DeleteLabelValues(sub, "dead")
		}
	}
	m.known = seen
	return nil
}
