package bench

import (
	"bytes"
	"fmt"
	"io"
	"strings"
)

// WriteMarkdown writes the tables docs/benchmarks.md shows, from a compare run's
// results: the drains and the costs at fixed rates, each figure the median of the
// runs with its interquartile range; inboxd against every other system, a ratio of
// medians marked "apart" only where the interquartile ranges do not overlap; and the
// ceiling, River's no-op and the ramp as inboxd-bench prints them. Nothing in it is
// edited by hand: bench/compare.sh puts it into the doc.
func WriteMarkdown(w io.Writer, results []Result) error {
	var b strings.Builder
	if rs := byMode(results, "drain"); len(rs) > 0 {
		b.WriteString("| drain | MaxWorkers | runs | events/s | CPU ms per 1,000 events | WAL B/event |\n|---|--:|--:|--:|--:|--:|\n")
		for _, r := range rs {
			cpu, walB := costCells(r)
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s |\n", r.System, workers(r), max(r.Runs, 1), spread(r.RateSpread, r.EventsPerSec), cpu, walB)
		}
		b.WriteString("\n")
	}
	if rs := byMode(results, "cost"); len(rs) > 0 {
		b.WriteString("| at a fixed rate | events/s | runs | CPU ms per 1,000 events | WAL B/event | p99 from the scheduled send, ms | lowest rate achieved | unprocessed |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range rs {
			cpu, walB := costCells(r)
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %.0f | %d |\n", r.System, r.TargetRate, r.Runs, cpu, walB,
				spread(r.P99Spread, float64(r.FromSchedule.P99.Microseconds())/1000), r.LowestRate, r.Unprocessed)
		}
		b.WriteString("\n")
	}
	if rows := comparisons(results); len(rows) > 0 {
		b.WriteString("| inboxd against | figure | inboxd | other | ratio | |\n|---|---|--:|--:|--:|---|\n")
		for _, c := range rows {
			verdict := "ranges overlap"
			if Apart(c.inboxd, c.other) {
				verdict = "apart"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.system, c.figure, spread(&c.inboxd, 0), spread(&c.other, 0), ratio(c.inboxd.Median, c.other.Median), verdict)
		}
		b.WriteString("\n")
	}
	var rest []Result
	for _, r := range results {
		if r.Mode == "ceiling" || r.Mode == "rate" || (r.Mode == "drain" && r.System == "river-noop") {
			rest = append(rest, r)
		}
	}
	if len(rest) > 0 {
		var t bytes.Buffer
		PrintTable(&t, rest)
		b.WriteString("```\n" + strings.TrimRight(t.String(), " \n") + "\n```\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// costCells are a summary's CPU per 1,000 events and WAL per event cells: "-" for a
// run without CPU figures (River's no-op is timed, not metered; a Postgres on another
// machine cannot be).
func costCells(r Result) (cpu, walB string) {
	if r.CPU == nil {
		return "-", "-"
	}
	return spread(r.CPUSpread, perThousand(r)), spread(r.WALSpread, wal(r))
}

// comparison is one figure of inboxd's beside another system's.
type comparison struct {
	system, figure string
	inboxd, other  Spread
}

// comparisons sets inboxd's summaries beside each other system's: drain events/s,
// and CPU and WAL per event at each fixed rate. Systems without repeated runs (no
// spread) are left out.
func comparisons(results []Result) []comparison {
	var out []comparison
	find := func(mode, system string, rate int) *Result {
		for i, r := range results {
			if r.Mode == mode && r.System == system && r.TargetRate == rate {
				return &results[i]
			}
		}
		return nil
	}
	drains, costs := byMode(results, "drain"), byMode(results, "cost")
	for _, system := range systems(append(drains, costs...)) {
		if system == "inboxd" || system == "river-noop" {
			continue
		}
		if a, o := find("drain", "inboxd", 0), find("drain", system, 0); a != nil && o != nil && a.RateSpread != nil && o.RateSpread != nil {
			out = append(out, comparison{system, "drain events/s", *a.RateSpread, *o.RateSpread})
		}
		for _, r := range costs {
			if r.System != system {
				continue
			}
			a := find("cost", "inboxd", r.TargetRate)
			if a == nil || a.CPUSpread == nil || r.CPUSpread == nil {
				continue
			}
			out = append(out,
				comparison{system, fmt.Sprintf("CPU ms per 1,000 events at %d/s", r.TargetRate), *a.CPUSpread, *r.CPUSpread},
				comparison{system, fmt.Sprintf("WAL B/event at %d/s", r.TargetRate), *a.WALSpread, *r.WALSpread},
				comparison{system, fmt.Sprintf("p99 from the scheduled send at %d/s, ms", r.TargetRate), *a.P99Spread, *r.P99Spread})
		}
	}
	return out
}

// Headline is the README's one line on the comparison: inboxd against against (River
// batched), each ratio of medians with whether the ranges are apart.
func Headline(results []Result, against string) string {
	var parts []string
	runs := 0
	for _, c := range comparisons(results) {
		if c.system != against || strings.HasPrefix(c.figure, "p99") {
			continue
		}
		verdict := "within the noise"
		if Apart(c.inboxd, c.other) {
			verdict = "apart"
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s)", c.figure, ratio(c.inboxd.Median, c.other.Median), verdict))
	}
	for _, r := range results {
		if r.Mode == "cost" || r.Mode == "drain" {
			runs = max(runs, r.Runs)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return fmt.Sprintf("inboxd / %s, medians of %d interleaved runs: %s.", against, runs, strings.Join(parts, "; "))
}

// ratio is a/b to two decimals, or to two significant digits when smaller than 0.1.
func ratio(a, b float64) string {
	if r := a / b; r < 0.1 {
		return fmt.Sprintf("%.2g×", r)
	}
	return fmt.Sprintf("%.2f×", a/b)
}
