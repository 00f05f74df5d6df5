package telemetry_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/telemetry"
	"github.com/asyncgate/asyncgate/orders"
)

// series lists the samples of a counter family as "labels value".
func series(t *testing.T, m *telemetry.Metrics, name string) string {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		var out []string
		for _, s := range f.Metric {
			var ls []string
			for _, l := range s.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			v := s.GetCounter().GetValue()
			if s.Histogram != nil {
				v = float64(s.Histogram.GetSampleCount())
			}
			out = append(out, fmt.Sprintf("%v %v", ls, v))
		}
		return strings.Join(out, "; ")
	}
	return ""
}

func TestMetricsAreOwnedByTheirRegistry(t *testing.T) {
	m1, m2 := telemetry.NewMetrics(), telemetry.NewMetrics()
	m1.OrderAccepted()
	m1.OrderEnded(orders.Executed)
	if got := series(t, m1, "asyncgate_orders_accepted_total"); got != "[] 1" {
		t.Errorf("first registry: %s", got)
	}
	if got := series(t, m2, "asyncgate_orders_accepted_total"); got != "[] 0" {
		t.Errorf("second registry: %s (counts leak between registries)", got)
	}
	if got := series(t, m1, "asyncgate_orders_terminal_total"); !strings.Contains(got, "[status=executed] 1") || !strings.Contains(got, "[status=cancelled] 0") {
		t.Errorf("terminal: %s", got)
	}
}

func TestHTTPLabelsAreBounded(t *testing.T) {
	m := telemetry.NewMetrics()
	m.ObserveHTTPRequest("", "BREW", 418, time.Millisecond)
	m.ObserveHTTPRequest("", "GET", 404, time.Millisecond)
	m.ObserveHTTPRequest("/v1/orders/:id", "GET", 200, time.Millisecond)
	m.ObserveHTTPRequest("/v1/orders/:id", "GET", 200, time.Millisecond)
	want := "[code=200 method=GET route=/v1/orders/:id] 2; [code=404 method=GET route=unmatched] 1; [code=418 method=other route=unmatched] 1"
	if got := series(t, m, "asyncgate_http_requests_total"); got != want {
		t.Errorf("requests:\n got %s\nwant %s", got, want)
	}
	if got := series(t, m, "asyncgate_http_request_duration_seconds"); got != "[method=GET route=/v1/orders/:id] 2; [method=GET route=unmatched] 1; [method=other route=unmatched] 1" {
		t.Errorf("durations: %s", got)
	}
}

func TestObservationsDoNotAllocate(t *testing.T) {
	m := telemetry.NewMetrics()
	m.ObserveHTTPRequest("/v1/orders", "POST", 202, time.Millisecond) // creates the series
	for name, f := range map[string]func(){
		"http":       func() { m.ObserveHTTPRequest("/v1/orders", "POST", 202, time.Millisecond) },
		"saga":       func() { m.ObserveSagaStep("reserve", "ok", time.Millisecond) },
		"downstream": func() { m.ObserveDownstreamAttempt("portfolio", "error", time.Millisecond) },
		"webhook":    func() { m.ObserveWebhookAttempt("delivered", time.Millisecond) },
		"terminal":   func() { m.OrderEnded(orders.Rejected) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per observation", name, n)
		}
	}
	if got := series(t, m, "asyncgate_saga_steps_total"); !strings.Contains(got, "[outcome=ok step=reserve] 101") {
		t.Errorf("saga steps: %s", got)
	}
}

func BenchmarkObserveHTTPRequest(b *testing.B) {
	m := telemetry.NewMetrics()
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveHTTPRequest("/v1/orders/:id", "GET", 200, time.Millisecond)
	}
}
