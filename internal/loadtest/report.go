package loadtest

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is the figures of one scenario.
type Row struct {
	Scenario string
	// N is the number of operations measured.
	N int
	// Rate is operations per second, in Unit ("req/s", "orders/s").
	Rate float64
	Unit string
	// P50 and P99 are latency percentiles of what Latency names.
	P50, P99 time.Duration
	Latency  string
	// Cost is what one operation cost, when measured.
	Cost Cost
}

// Cost is the resources one operation used: CPU of this process (load
// generator included) and of redis-server, and Redis calls (round trips
// of this process's client: a pipeline or script is one).
type Cost struct {
	CPU, RedisCPU time.Duration
	RedisCalls    float64
}

// RowOf is the row of a Run.
func RowOf(scenario, unit, latency string, r Run) Row {
	return Row{Scenario: scenario, N: r.Ops, Rate: r.Rate(), Unit: unit,
		P50: r.Latencies.Percentile(50), P99: r.Latencies.Percentile(99), Latency: latency}
}

// Verdicts of a Check.
const (
	Pass = "PASS"
	Miss = "MISS"
)

// Check compares one figure with its target.
type Check struct {
	Name, Got, Target string
	// Verdict is Pass, Miss, or empty for a figure reported without a target.
	Verdict string
}

// AtLeast checks got ≥ target; format prints both (such as "%.2f").
// A NaN (a ratio of nothing) misses.
func AtLeast(name string, got, target float64, format string) Check {
	c := Check{Name: name, Got: fmt.Sprintf(format, got), Target: "≥ " + fmt.Sprintf(format, target), Verdict: Miss}
	if math.IsNaN(got) || math.IsInf(got, 0) {
		c.Got = "n/a"
		return c
	}
	if got >= target {
		c.Verdict = Pass
	}
	return c
}

// AtMost checks got ≤ target; format prints both. A NaN misses.
func AtMost(name string, got, target float64, format string) Check {
	c := Check{Name: name, Got: fmt.Sprintf(format, got), Target: "≤ " + fmt.Sprintf(format, target), Verdict: Miss}
	if math.IsNaN(got) || math.IsInf(got, 0) {
		c.Got = "n/a"
		return c
	}
	if got <= target {
		c.Verdict = Pass
	}
	return c
}

// Under checks got < target. A zero got (nothing measured) misses.
func Under(name string, got, target time.Duration) Check {
	c := Check{Name: name, Got: ms(got), Target: "< " + ms(target), Verdict: Miss}
	if got == 0 {
		c.Got = "n/a"
		return c
	}
	if got < target {
		c.Verdict = Pass
	}
	return c
}

// Info reports a figure that has no target.
func Info(name, got string) Check { return Check{Name: name, Got: got} }

// Ratio is a/b, NaN when b is zero.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// Report is the figures of one load run, printed as one table.
type Report struct {
	// Title and Notes are printed above the table.
	Title  string
	Notes  []string
	Rows   []Row
	Checks []Check
}

// Missed names the checks that missed their targets.
func (r *Report) Missed() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Verdict == Miss {
			out = append(out, c.Name)
		}
	}
	return out
}

// Write prints the report.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	if r.Title != "" {
		fmt.Fprintf(&b, "%s\n", r.Title)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  %s\n", n)
	}
	b.WriteString("\n")
	width := len("scenario")
	for _, row := range r.Rows {
		width = max(width, len(row.Scenario))
	}
	fmt.Fprintf(&b, "%-*s  %8s  %10s %-9s  %9s  %9s  %8s  %8s  %6s  %s\n", width, "scenario", "n", "rate", "", "p50", "p99",
		"cpu/op", "redis/op", "calls", "latency of")
	for _, row := range r.Rows {
		cpu, rcpu, calls := "-", "-", "-"
		if row.Cost != (Cost{}) {
			cpu, rcpu, calls = us(row.Cost.CPU), us(row.Cost.RedisCPU), fmt.Sprintf("%.1f", row.Cost.RedisCalls)
		}
		fmt.Fprintf(&b, "%-*s  %8d  %10.0f %-9s  %9s  %9s  %8s  %8s  %6s  %s\n", width, row.Scenario, row.N, row.Rate, row.Unit,
			ms(row.P50), ms(row.P99), cpu, rcpu, calls, row.Latency)
	}
	b.WriteString("\n  cpu/op: CPU of this process (clients, server, worker, simulator) per operation; redis/op: CPU of\n" +
		"  redis-server per operation; calls: Redis round trips of this process per operation.\n")
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "figure\tgot\ttarget\tverdict\n")
	for _, c := range r.Checks {
		target, verdict := c.Target, c.Verdict
		if target == "" {
			target = "-"
		}
		if verdict == "" {
			verdict = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, c.Got, target, verdict)
	}
	tw.Flush()
	_, err := io.WriteString(w, b.String())
	return err
}

// us prints d in microseconds.
func us(d time.Duration) string {
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}

// ms prints d in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
