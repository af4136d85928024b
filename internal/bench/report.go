package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// PrintTable writes results for people: one table per mode, and inboxd's drain rate
// as a ratio to each other system's best.
func PrintTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if rs := byMode(results, "ceiling"); len(rs) > 0 {
		fmt.Fprintln(tw, "ceiling\tclients\tcommits/s\twith NOTIFY trigger\tratio\t")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t\n", r.System, r.Clients, r.CommitsPerSec, r.NotifyCommitsPerS, r.NotifyCommitsPerS/r.CommitsPerSec)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t")
	}
	if rs := byMode(results, "drain-sweep"); len(rs) > 0 {
		fmt.Fprintln(tw, "drain: River's MaxWorkers sweep\tworkers\tevents\tevents/s\tCPU ms/1000 events (server + Postgres; generator)\t")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t\n", r.System, workers(r), r.Events, r.EventsPerSec, cost(r))
		}
		fmt.Fprintln(tw, "\t\t\t\t\t")
	}
	if rs := byMode(results, "drain"); len(rs) > 0 {
		fmt.Fprintln(tw, "drain (median (IQR))\tworkers\truns\tevents\tevents/s\tCPU ms/1000 events\tWAL B/event\t")
		for _, r := range rs {
			cpu, walB := "-", "-" // River's no-op is timed, not metered
			if r.CPU != nil {
				cpu, walB = spread(r.CPUSpread, perThousand(r)), spread(r.WALSpread, wal(r))
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t\n", r.System, workers(r), max(r.Runs, 1), r.Events, spread(r.RateSpread, r.EventsPerSec), cpu, walB)
		}
		rate := func(r *Result) float64 {
			if r.RateSpread != nil {
				return r.RateSpread.Median
			}
			return r.EventsPerSec
		}
		if a := best(rs, "inboxd"); a != nil {
			for _, system := range systems(rs) {
				if b := best(rs, system); system != "inboxd" && b != nil {
					fmt.Fprintf(tw, "inboxd / %s (medians)\t\t\t\t%.2fx\t\t\t\n", system, rate(a)/rate(b))
				}
			}
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t")
	}
	if rs := byMode(results, "cost"); len(rs) > 0 {
		fmt.Fprintln(tw, "cost (median (IQR))\ttarget/s\truns\tCPU ms/1000 events\tWAL B/event\tfrom schedule p99 ms\tlowest achieved/s\tunprocessed\t")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%.0f\t%d\t\n", r.System, r.TargetRate, r.Runs, spread(r.CPUSpread, perThousand(r)),
				spread(r.WALSpread, wal(r)), spread(r.P99Spread, float64(r.FromSchedule.P99.Microseconds())/1000), r.LowestRate, r.Unprocessed)
		}
		fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t")
	}
	if rs := byMode(results, "rate"); len(rs) > 0 {
		fmt.Fprintln(tw, "rate\ttarget/s\tachieved/s\terrors\tack p50/p99 ms\te2e p50/p95/p99/max ms\tfrom schedule p99 ms\tCPU ms/1000 events (server + Postgres; generator)\tunprocessed\t")
		for _, r := range rs {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%d\t%s\t%s\t%s\t%s\t%d\t\n", r.System, r.TargetRate, r.AchievedRate, r.Errors,
				ms(r.Ack.P50)+" / "+ms(r.Ack.P99), strings.Join([]string{ms(r.EndToEnd.P50), ms(r.EndToEnd.P95), ms(r.EndToEnd.P99), ms(r.EndToEnd.Max)}, " / "),
				ms(r.FromSchedule.P99), cost(r), r.Unprocessed)
		}
	}
	tw.Flush()
}

func ms(d interface{ Microseconds() int64 }) string {
	return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000)
}

// spread is a summary's figure as "median (Q1–Q3)", the median alone for a single
// run, or v without a summary.
func spread(s *Spread, v float64) string {
	if s == nil {
		return fmt.Sprintf("%.0f", v)
	}
	f := "%.0f"
	if s.Median < 100 {
		f = "%.1f"
	}
	if s.Runs == 1 {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Q1, s.Q3)
}

func perThousand(r Result) float64 {
	if r.CPU == nil {
		return 0
	}
	return r.CPU.PerThousand
}

func wal(r Result) float64 {
	if r.CPU == nil {
		return 0
	}
	return r.CPU.WALPerEvent
}

func workers(r Result) string {
	if r.Workers == 0 {
		return "-"
	}
	return fmt.Sprint(r.Workers)
}

// cost is the CPU per 1,000 events and its split, or "-" when not measured.
func cost(r Result) string {
	if r.CPU == nil {
		return "-"
	}
	n := float64(max(r.Events, r.EndToEnd.N))
	if n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f (%.0f + %.0f; generator %.0f); WAL %.0f B/event", r.CPU.PerThousand, r.CPU.TargetMs/n*1000, r.CPU.PostgresMs/n*1000, r.CPU.GeneratorMs/n*1000, r.CPU.WALPerEvent)
}

func byMode(results []Result, mode string) []Result {
	var out []Result
	for _, r := range results {
		if r.Mode == mode {
			out = append(out, r)
		}
	}
	return out
}

// systems lists the systems in results, in order of first appearance.
func systems(results []Result) []string {
	var out []string
	for _, r := range results {
		if !slices.Contains(out, r.System) {
			out = append(out, r.System)
		}
	}
	return out
}

// best returns system's fastest drain (of a MaxWorkers sweep), or nil.
func best(results []Result, system string) *Result {
	var b *Result
	for i := range results {
		if results[i].System == system && (b == nil || results[i].EventsPerSec > b.EventsPerSec) {
			b = &results[i]
		}
	}
	return b
}

// BestWorkers returns the MaxWorkers of system's fastest drain in results (of
// River's sweep, if it ran), or 0.
func BestWorkers(results []Result, system string) int {
	for _, mode := range []string{"drain-sweep", "drain"} {
		if b := best(byMode(results, mode), system); b != nil {
			return b.Workers
		}
	}
	return 0
}

// Passes reports whether a rate step meets the SLO: p99 end to end under limit, no
// errors, nothing left unprocessed, and the rate actually achieved. The last matters
// in an open-loop test: a server that cannot keep up answers late, the sender's
// schedule slips into queueing, and a low latency over a fraction of the load would
// otherwise look like a pass.
func Passes(r Result, p99Limit float64) bool {
	return r.Errors == 0 && r.Unprocessed == 0 && r.EndToEnd.P99.Seconds()*1000 < p99Limit &&
		r.AchievedRate >= 0.95*float64(r.TargetRate)
}

// WriteSVG draws end-to-end p50 (dashed) and p99 (solid) per rate step, a colour per
// system, on a log scale (latencies span orders of magnitude). A step that missed the
// SLO gets a cross on its p99 point.
func WriteSVG(w io.Writer, results []Result) error {
	steps := byMode(results, "rate")
	if len(steps) == 0 {
		return fmt.Errorf("no rate steps to draw")
	}
	slices.SortStableFunc(steps, func(a, b Result) int { return a.TargetRate - b.TargetRate })
	const width, height, left, bottom, top, right = 820, 440, 70, 50, 30, 210
	maxRate := 0
	for _, r := range steps {
		maxRate = max(maxRate, r.TargetRate)
	}
	x := func(rate int) float64 { return left + float64(rate)/float64(maxRate)*(width-left-right) }
	// y: log10 of milliseconds, 10^4 ms at the top, 10^-1 ms at the bottom
	y := func(msv float64) float64 {
		lg := math.Log10(min(max(msv, 0.1), 10000))
		return top + (4-lg)/5*(height-top-bottom)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">End-to-end latency (acknowledgement to processed), p50 dashed and p99 solid, per offered rate</text>`+"\n", left)
	for _, v := range []float64{0.1, 1, 10, 100, 1000, 10000} {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%g ms</text>`+"\n",
			left, width-right, y(v), y(v), left-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="4 3"/><text x="%d" y="%.1f" fill="#c00">100 ms SLO</text>`+"\n",
		left, width-right, y(100), y(100), width-right+6, y(100)+4)
	labelled := map[int]bool{}
	for _, r := range steps {
		if !labelled[r.TargetRate] {
			labelled[r.TargetRate] = true
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%d</text>`+"\n", x(r.TargetRate), height-bottom+18, r.TargetRate)
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">offered events/s</text>`+"\n", (width-right+left)/2, height-10)
	palette := []string{"#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#e6ab02"}
	legend := top + 10
	for i, system := range systems(steps) {
		color := palette[i%len(palette)]
		for _, p := range []string{"p50", "p99"} {
			var pts []string
			for _, r := range steps {
				if r.System != system {
					continue
				}
				v := r.EndToEnd.P99
				if p == "p50" {
					v = r.EndToEnd.P50
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(r.TargetRate), y(v.Seconds()*1000)))
			}
			dash := ""
			if p == "p50" {
				dash = ` stroke-dasharray="6 4"`
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(pts, " "))
		}
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text>`+"\n",
			width-right+10, width-right+34, legend, legend, color, width-right+40, legend+4, system)
		legend += 18
	}
	missed := false
	for _, r := range steps {
		if !Passes(r, 100) {
			missed = true
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="#c00" font-size="16" font-weight="bold">×</text>`+"\n",
				x(r.TargetRate), y(r.EndToEnd.P99.Seconds()*1000)+5)
		}
	}
	if missed {
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#c00">× missed the SLO</text>`+"\n", width-right+10, legend+4)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
