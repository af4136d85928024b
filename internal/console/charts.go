package console

import (
	"fmt"
	"time"

	"inboxd/internal/processor"
)

// The overview's charts: the last chartMinutes minutes of the processor's rollup
// (processor.ReadMinutes), drawn as inline SVG bars on the server, so that they need
// no script and no inline style (the colours are the stylesheet's classes), each
// with a table of its figures for screen readers and for reading exact values.

const (
	chartMinutes = 30
	chartWidth   = 600 // the viewBox; the stylesheet scales it to the page
	chartHeight  = 120
)

// chart is one chart.
type chart struct {
	ID, Title, Caption string
	Width, Height      int
	Max                string // the value of the top of the scale
	Bars               []bar
	Rows               []chartRow
}

// bar is one minute's bar (and an inner bar: dead events, or the median latency).
type bar struct {
	X, W, Y, H int
	InnerY     int
	InnerH     int
	Label      string // the minute's figures, as the bar's tooltip
}

type chartRow struct {
	Minute string
	A, B   string
}

// minuteSlots returns the last n minutes' figures, oldest first, a zero Minute for
// minutes in which nothing finished.
func minuteSlots(ms []processor.Minute, now time.Time, n int) []processor.Minute {
	end := now.UTC().Truncate(time.Minute)
	byStart := map[time.Time]processor.Minute{}
	for _, m := range ms {
		byStart[m.Start.UTC()] = m
	}
	out := make([]processor.Minute, n)
	for i := range n {
		start := end.Add(time.Duration(i-n+1) * time.Minute)
		m, ok := byStart[start]
		if !ok {
			m = processor.Minute{Start: start}
		}
		out[i] = m
	}
	return out
}

// scale returns the height of v on a scale whose top is top.
func scale(v, top float64) int {
	if top <= 0 {
		return 0
	}
	return int(v / top * float64(chartHeight-4))
}

func barsOf(slots []processor.Minute, outer, inner func(processor.Minute) float64, label func(processor.Minute) string) ([]bar, float64) {
	var top float64
	for _, m := range slots {
		top = max(top, outer(m))
	}
	w := chartWidth / len(slots)
	bars := make([]bar, len(slots))
	for i, m := range slots {
		h, ih := scale(outer(m), top), scale(inner(m), top)
		bars[i] = bar{X: i*w + 1, W: w - 2, Y: chartHeight - h, H: h, InnerY: chartHeight - ih, InnerH: ih, Label: label(m)}
	}
	return bars, top
}

func minuteLabel(m processor.Minute) string { return m.Start.Format("15:04Z") }

// perMinute shows a rate per minute, and per second too from one a second up
// ("5/min (0/s)" said nothing).
func perMinute(n float64) string {
	if n < 60 {
		return fmt.Sprintf("%.0f/min", n)
	}
	return fmt.Sprintf("%.0f/min (%.0f/s)", n, n/60)
}

// throughputChart: events finished per minute, the dead ones inside.
func throughputChart(slots []processor.Minute) chart {
	bars, top := barsOf(slots,
		func(m processor.Minute) float64 { return float64(m.Processed + m.Dead) },
		func(m processor.Minute) float64 { return float64(m.Dead) },
		func(m processor.Minute) string {
			return fmt.Sprintf("%s: %d processed, %d dead, %d to retry", minuteLabel(m), m.Processed, m.Dead, m.Retried)
		})
	c := chart{ID: "throughput", Title: "Events finished per minute", Caption: "processed, with the dead ones in red",
		Width: chartWidth, Height: chartHeight, Max: perMinute(top), Bars: bars}
	for _, m := range slots {
		c.Rows = append(c.Rows, chartRow{Minute: minuteLabel(m), A: fmt.Sprint(m.Processed), B: fmt.Sprint(m.Dead)})
	}
	return c
}

// latencyChart: receipt to processed per minute, the 99th percentile with the median
// inside (each the upper bound of its bucket).
func latencyChart(slots []processor.Minute) chart {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	bars, top := barsOf(slots,
		func(m processor.Minute) float64 { return ms(m.Quantile(0.99)) },
		func(m processor.Minute) float64 { return ms(m.Quantile(0.5)) },
		func(m processor.Minute) string {
			return fmt.Sprintf("%s: p50 ≤ %s, p99 ≤ %s", minuteLabel(m), m.Quantile(0.5), m.Quantile(0.99))
		})
	c := chart{ID: "latency", Title: "Receipt to processed, per minute", Caption: "99th percentile, with the median inside",
		Width: chartWidth, Height: chartHeight, Max: (time.Duration(top) * time.Millisecond).String(), Bars: bars}
	for _, m := range slots {
		c.Rows = append(c.Rows, chartRow{Minute: minuteLabel(m), A: "≤ " + m.Quantile(0.5).String(), B: "≤ " + m.Quantile(0.99).String()})
	}
	return c
}
