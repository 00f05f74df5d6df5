package app_test

// The tracing tests install a global tracer provider and propagator for
// their duration (before the app is built, so that its HTTP middleware
// takes it): they must not run in parallel. Parallel tests of the package
// start only after every sequential one ended.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/oteltest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
)

// seenRequest is a request the simulator got, with its traceparent.
type seenRequest struct {
	method, path, traceparent string
	status                    int
}

// tracedSim serves the simulator behind a recorder of every request's
// traceparent; fail, when set, may answer a request instead (return true).
type tracedSim struct {
	sim  *sim.Sim
	mu   sync.Mutex
	seen []seenRequest
	fail func(r *http.Request, n int) bool // n: how many requests of this path came before
}

func (s *tracedSim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := 0
	for _, q := range s.seen {
		if q.method == r.Method && q.path == r.URL.Path {
			n++
		}
	}
	failed := s.fail != nil && s.fail(r, n)
	status := http.StatusOK
	if failed {
		status = http.StatusServiceUnavailable
	}
	s.seen = append(s.seen, seenRequest{r.Method, r.URL.Path, r.Header.Get("traceparent"), status})
	s.mu.Unlock()
	if failed {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"unavailable","detail":"injected by the test"}`))
		return
	}
	s.sim.ServeHTTP(w, r)
}

func (s *tracedSim) requests(method, path string) []seenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []seenRequest
	for _, q := range s.seen {
		if q.method == method && q.path == path {
			out = append(out, q)
		}
	}
	return out
}

// setupTraced is setup with tracing installed first and the simulator
// behind a tracedSim.
func setupTraced(t *testing.T, fail func(*http.Request, int) bool, opts ...option) (*bundle, *tracedSim, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := oteltest.Install(t)
	rdb := redistest.Shared(t).NewClient(t)
	ts := &tracedSim{sim: sim.New(sim.Config{}), fail: fail}
	simSrv := httptest.NewServer(ts)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(rdb, simSrv.URL)
	cfg.Logger = testLogger(t)
	fastWebhooks(&cfg)
	for _, o := range opts {
		o(&cfg)
	}
	a, url := apptest.Serve(t, cfg)
	return &bundle{app: a, url: url, sim: ts.sim, rdb: rdb}, ts, exp
}

// placeAndFinish places an order through the checked API client, waits
// until it is executed and returns it.
func placeAndFinish(t *testing.T, a *api) orders.Order {
	t.Helper()
	var o orders.Order
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(), &o)
	deadline := time.Now().Add(30 * time.Second)
	for !o.Status.Terminal() {
		if time.Now().After(deadline) {
			t.Fatalf("order %s still %s", o.ID, o.Status)
		}
		a.must(http.StatusOK, "GET", "/v1/orders/"+o.ID+"?wait=5s", apiKey, nil, &o)
	}
	if o.Status != orders.Executed {
		t.Fatalf("order ended %s (%s)", o.Status, o.Reason)
	}
	return o
}

// acceptSpan finds the server span of the POST that accepted the order.
func acceptSpan(t *testing.T, exp *tracetest.InMemoryExporter, orderID string) tracetest.SpanStub {
	t.Helper()
	for _, s := range exp.GetSpans() {
		if s.Name == "POST /v1/orders" && attr(s, "asyncgate.order.id") == orderID {
			return s
		}
	}
	t.Fatalf("no server span POST /v1/orders with asyncgate.order.id %s", orderID)
	return tracetest.SpanStub{}
}

// traceSpans polls until the trace holds at least the wanted number of
// spans of each name, and returns its spans.
func traceSpans(t *testing.T, exp *tracetest.InMemoryExporter, id trace.TraceID, want map[string]int) []tracetest.SpanStub {
	t.Helper()
	var spans []tracetest.SpanStub
	pollUntil(t, 30*time.Second, "the trace's spans", func() bool {
		spans = spans[:0]
		count := map[string]int{}
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == id {
				spans = append(spans, s)
				count[s.Name]++
			}
		}
		for name, n := range want {
			if count[name] < n {
				return false
			}
		}
		return true
	})
	return spans
}

func named(spans []tracetest.SpanStub, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b tracetest.SpanStub) int { return a.StartTime.Compare(b.StartTime) })
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// traceparentOf splits a W3C traceparent into its trace and parent ids.
func traceparentOf(t *testing.T, v string) (traceID, parentID string) {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("traceparent %q is not W3C", v)
	}
	return parts[1], parts[2]
}

// TestTraceOneOrderIsOneTrace: one POST /v1/orders makes one trace, from
// the API's server span through the worker's consumer and saga step spans
// and the downstream client spans to the webhook delivery span; the
// simulator and the webhook receiver get traceparents of that trace,
// naming the client span that called them; no span carries a secret.
func TestTraceOneOrderIsOneTrace(t *testing.T) {
	b, ts, exp := setupTraced(t, nil)
	a := b.api(t)
	rcv := newHookReceiver(t)
	_, secret := a.createEndpoint(apiKey, rcv.URL+"/hooks", "order.executed")

	o := placeAndFinish(t, a)
	hit := rcv.next(t)

	accept := acceptSpan(t, exp, o.ID)
	id := accept.SpanContext.TraceID()
	if accept.SpanKind != trace.SpanKindServer || accept.Parent.IsValid() || attr(accept, "asyncgate.tenant") != "acme" ||
		attr(accept, "http.route") != "/v1/orders" || attr(accept, "http.response.status_code") != "202" {
		t.Fatalf("accept span: kind %v, parent %v, attributes %v", accept.SpanKind, accept.Parent, accept.Attributes)
	}
	spans := traceSpans(t, exp, id, map[string]int{
		"asynq.process order:process":   1,
		"saga.validate":                 1,
		"saga.reserve_funds":            1,
		"saga.execute":                  1,
		"POST /reservations":            1,
		"POST /executions":              1,
		"asynq.process webhook:fanout":  1,
		"webhook.fanout":                1,
		"asynq.process webhook:deliver": 1,
		"webhook.deliver":               1,
		"send orders":                   1,
		"send webhooks":                 2,
	})

	// The accept span enqueues the order task in a producer span, which
	// the order task's consumer span continues; the steps hang below it.
	send := named(spans, "send orders")[0]
	if send.Parent.SpanID() != accept.SpanContext.SpanID() || send.SpanKind != trace.SpanKindProducer ||
		attr(send, "messaging.system") != "asynq" || attr(send, "messaging.operation.type") != "send" ||
		attr(send, "messaging.destination.name") != b.app.Enq.Queue(jobs.QueueOrders, o.ID) || attr(send, "messaging.message.id") != o.ID {
		t.Fatalf("order task's producer span: parent %v (want %v), kind %v, attributes %v", send.Parent.SpanID(), accept.SpanContext.SpanID(), send.SpanKind, send.Attributes)
	}
	process := named(spans, "asynq.process order:process")[0]
	if process.Parent.SpanID() != send.SpanContext.SpanID() || process.SpanKind != trace.SpanKindConsumer ||
		attr(process, "messaging.destination.name") != b.app.Enq.Queue(jobs.QueueOrders, o.ID) || attr(process, "messaging.message.id") != o.ID {
		t.Fatalf("order task span: parent %v (want %v), attributes %v", process.Parent.SpanID(), send.SpanContext.SpanID(), process.Attributes)
	}
	// (It usually starts after the producer span ended too, but the worker
	// may take the task before the API's goroutine ends the span.)
	if !process.StartTime.After(send.StartTime) || !send.StartTime.After(accept.StartTime) {
		t.Errorf("span starts out of order: accept %v, send %v, process %v", accept.StartTime, send.StartTime, process.StartTime)
	}
	for _, step := range []string{"saga.validate", "saga.reserve_funds", "saga.execute"} {
		if s := named(spans, step)[0]; s.Parent.SpanID() != process.SpanContext.SpanID() {
			t.Fatalf("%s is not a child of the order task's span", step)
		}
	}

	// Each downstream call is a client span whose id the simulator got.
	for _, c := range []struct{ span, step, path string }{
		{"POST /reservations", "saga.reserve_funds", "/reservations"},
		{"POST /executions", "saga.execute", "/executions"},
	} {
		client := named(spans, c.span)[0]
		if client.SpanKind != trace.SpanKindClient || client.Parent.SpanID() != named(spans, c.step)[0].SpanContext.SpanID() ||
			attr(client, "http.response.status_code") == "" || !strings.HasSuffix(attr(client, "url.full"), c.path) {
			t.Fatalf("%s: kind %v, attributes %v", c.span, client.SpanKind, client.Attributes)
		}
		got := ts.requests("POST", c.path)
		if len(got) != 1 {
			t.Fatalf("simulator got %d %s requests", len(got), c.path)
		}
		tid, pid := traceparentOf(t, got[0].traceparent)
		if tid != id.String() || pid != client.SpanContext.SpanID().String() {
			t.Fatalf("simulator's traceparent for %s = %q, want trace %s span %s", c.path, got[0].traceparent, id, client.SpanContext.SpanID())
		}
	}

	// The webhook: a saga step enqueues the fan-out (producer, consumer,
	// webhook.fanout), which enqueues the delivery (producer, consumer,
	// webhook.deliver); the receiver got the delivery span's traceparent.
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		byID[s.SpanContext.SpanID()] = s
	}
	parentOf := func(s tracetest.SpanStub) tracetest.SpanStub { return byID[s.Parent.SpanID()] }
	deliver := named(spans, "webhook.deliver")[0]
	chain := []tracetest.SpanStub{deliver}
	for len(chain) < 7 {
		chain = append(chain, parentOf(chain[len(chain)-1]))
	}
	var names []string
	for _, s := range chain {
		names = append(names, s.Name)
	}
	if want := []string{"webhook.deliver", "asynq.process webhook:deliver", "send webhooks", "webhook.fanout",
		"asynq.process webhook:fanout", "send webhooks", "asynq.process order:process"}; !slices.Equal(names, want) {
		t.Fatalf("the delivery's ancestors: %q, want %q", names, want)
	}
	if chain[2].SpanKind != trace.SpanKindProducer || attr(chain[2], "asynq.task.type") != "webhook:deliver" ||
		chain[5].SpanKind != trace.SpanKindProducer || attr(chain[5], "asynq.task.type") != "webhook:fanout" {
		t.Fatalf("webhook producer spans: %v / %v", chain[2].Attributes, chain[5].Attributes)
	}
	if fanout := chain[3]; attr(fanout, "asynq.task.type") != "webhook:fanout" {
		t.Fatalf("webhook.fanout attributes %v", fanout.Attributes)
	}
	if compensate := named(exp.GetSpans(), "saga.compensate"); len(compensate) != 0 {
		t.Fatalf("an executed order was compensated: %v", compensate)
	}

	// Every span of the order's trace names the order and its tenant, so a
	// search by order id finds the whole trace, whatever span it hits.
	for _, s := range spans {
		if attr(s, "asyncgate.order.id") != o.ID || attr(s, "asyncgate.tenant") != "acme" {
			t.Errorf("span %q (%v) does not name the order: %v", s.Name, s.SpanKind, s.Attributes)
		}
	}
	for _, s := range exp.GetSpans() {
		if attr(s, "asyncgate.order.id") == o.ID && s.SpanContext.TraceID() != id && !strings.HasPrefix(s.Name, "GET ") {
			t.Errorf("span %q of another trace names the order", s.Name)
		}
	}
	if deliver.SpanKind != trace.SpanKindClient || attr(deliver, "http.response.status_code") != "200" || attr(deliver, "asyncgate.attempt") != "1" {
		t.Fatalf("delivery span: kind %v, attributes %v", deliver.SpanKind, deliver.Attributes)
	}
	tid, pid := traceparentOf(t, hit.header.Get("traceparent"))
	if tid != id.String() || pid != deliver.SpanContext.SpanID().String() {
		t.Fatalf("receiver's traceparent %q, want trace %s span %s", hit.header.Get("traceparent"), id, deliver.SpanContext.SpanID())
	}

	// Other requests: spans named by route template, never by raw path;
	// the probes untraced.
	a.must(http.StatusOK, "GET", "/healthz", "", nil, nil)
	pollUntil(t, 10*time.Second, "the GET span of the order", func() bool {
		return len(named(exp.GetSpans(), "GET /v1/orders/:id")) > 0
	})
	for _, s := range exp.GetSpans() {
		if strings.Contains(s.Name, o.ID) || strings.Contains(s.Name, "healthz") {
			t.Fatalf("span named %q", s.Name)
		}
	}

	// No span of the whole run (this trace and the others: the endpoint's
	// registration, the polls) carries the API key, the webhook secret, the
	// signature or the body.
	secrets := map[string]string{
		"API key":    apiKey,
		"secret":     secret.String(),
		"secret key": strings.TrimPrefix(secret.String(), "whsec_"),
		"signature":  hit.header.Get("webhook-signature"),
		"body":       string(hit.body),
	}
	for _, s := range exp.GetSpans() {
		texts := []string{s.Name, s.Status.Description}
		for _, kv := range s.Attributes {
			texts = append(texts, kv.Value.Emit())
		}
		for _, e := range s.Events {
			for _, kv := range e.Attributes {
				texts = append(texts, kv.Value.Emit())
			}
		}
		for what, v := range secrets {
			if v == "" {
				t.Fatalf("nothing to look for as the %s", what)
			}
			for _, text := range texts {
				if strings.Contains(text, v) {
					t.Fatalf("span %q carries the %s: %q", s.Name, what, text)
				}
			}
		}
	}
}

// TestTraceRetriedAttemptsAreSpans: a retried downstream attempt and a
// retried task are each a span of their own in the order's trace.
func TestTraceRetriedAttemptsAreSpans(t *testing.T) {
	// The first execution attempt answers 503 (the client retries within
	// the call); the first reservation too, with one attempt per call, so
	// the whole task fails and Asynq runs it again.
	fail := func(r *http.Request, n int) bool {
		return n == 0 && r.Method == "POST" && (r.URL.Path == "/executions" || r.URL.Path == "/reservations")
	}
	b, ts, exp := setupTraced(t, fail, func(c *app.Config) { c.Portfolio.MaxAttempts = 1 })
	o := placeAndFinish(t, b.api(t))

	id := acceptSpan(t, exp, o.ID).SpanContext.TraceID()
	spans := traceSpans(t, exp, id, map[string]int{
		"asynq.process order:process": 2,
		"POST /reservations":          2,
		"POST /executions":            2,
	})

	tasks := named(spans, "asynq.process order:process")
	if attr(tasks[0], "asynq.retry_count") != "0" || attr(tasks[1], "asynq.retry_count") != "1" ||
		tasks[0].Status.Code != codes.Error || tasks[1].Status.Code == codes.Error {
		t.Fatalf("task attempts: retry counts %q %q, status %v %v",
			attr(tasks[0], "asynq.retry_count"), attr(tasks[1], "asynq.retry_count"), tasks[0].Status, tasks[1].Status)
	}
	for _, path := range []string{"/reservations", "/executions"} {
		calls := named(spans, "POST "+path)
		if len(calls) != 2 {
			t.Fatalf("%d attempt spans for %s, want 2", len(calls), path)
		}
		if attr(calls[0], "http.response.status_code") != "503" || calls[0].Status.Code != codes.Error ||
			attr(calls[1], "http.response.status_code") == "503" || calls[1].Status.Code == codes.Error {
			t.Fatalf("%s attempts: %v / %v", path, calls[0].Attributes, calls[1].Attributes)
		}
		seen := ts.requests("POST", path)
		if len(seen) != 2 {
			t.Fatalf("simulator got %d %s requests, want 2", len(seen), path)
		}
		for i, q := range seen {
			tid, pid := traceparentOf(t, q.traceparent)
			if tid != id.String() || pid != calls[i].SpanContext.SpanID().String() {
				t.Fatalf("%s request %d: traceparent %q, want span %s of trace %s", path, i, q.traceparent, calls[i].SpanContext.SpanID(), id)
			}
		}
	}
	// The execution's attempts are one call: same step span, numbered.
	exec := named(spans, "POST /executions")
	if exec[0].Parent.SpanID() != exec[1].Parent.SpanID() || attr(exec[0], "asyncgate.attempt") != "1" || attr(exec[1], "asyncgate.attempt") != "2" {
		t.Fatalf("execution attempts: parents %v %v, attempts %q %q", exec[0].Parent.SpanID(), exec[1].Parent.SpanID(),
			attr(exec[0], "asyncgate.attempt"), attr(exec[1], "asyncgate.attempt"))
	}
	// The reservation's attempts are two tasks: different task spans.
	res := named(spans, "POST /reservations")
	if res[0].Parent.SpanID() == res[1].Parent.SpanID() {
		t.Fatal("the reservation's attempts share a parent; want one per task attempt")
	}
}

// TestTraceContinuesTheCallersTrace: a POST /v1/orders with a traceparent
// is a child of the caller's span, and so is all the work it starts.
func TestTraceContinuesTheCallersTrace(t *testing.T) {
	b, ts, exp := setupTraced(t, nil)
	const callerTrace, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest("POST", "/v1/orders", strings.NewReader(`{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":1,"type":"market"}`))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	res, err := apitest.Client(t, b.url).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var o orders.Order
	err = json.NewDecoder(res.Body).Decode(&o)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("place: %d %v", res.StatusCode, err)
	}
	accept := acceptSpan(t, exp, o.ID)
	if accept.SpanContext.TraceID().String() != callerTrace || accept.Parent.SpanID().String() != callerSpan || !accept.Parent.IsRemote() {
		t.Fatalf("accept span in trace %s under %s, want %s under %s", accept.SpanContext.TraceID(), accept.Parent.SpanID(), callerTrace, callerSpan)
	}
	traceSpans(t, exp, accept.SpanContext.TraceID(), map[string]int{"saga.execute": 1, "POST /executions": 1})
	if got := ts.requests("POST", "/executions"); len(got) != 1 || !strings.HasPrefix(got[0].traceparent, "00-"+callerTrace+"-") {
		t.Fatalf("execution requests %v, want one in the caller's trace", got)
	}
}

// TestTraceCompensationNamesTheOrder: an order cancelled while its funds
// are being reserved is compensated in its trace: the compensation task's
// producer and consumer spans, saga.compensate and the release call all
// name the order and its tenant.
func TestTraceCompensationNamesTheOrder(t *testing.T) {
	b, _, exp := setupTraced(t, nil)
	a := b.api(t)
	// A slow portfolio keeps the order cancellable.
	if err := b.sim.SetFaults(sim.Portfolio, sim.Faults{Latency: time.Second}); err != nil {
		t.Fatal(err)
	}
	var o orders.Order
	a.must(http.StatusAccepted, "POST", "/v1/orders", apiKey, order(), &o)
	// Cancelled once validated, while its funds are being reserved: a
	// pending order would be cancelled without any work to undo.
	a.must(http.StatusOK, "GET", "/v1/orders/"+o.ID+"?wait=10s", apiKey, nil, &o)
	if o.Status != orders.Validated {
		t.Fatalf("order %s is %s, want validated", o.ID, o.Status)
	}
	a.must(http.StatusAccepted, "POST", "/v1/orders/"+o.ID+"/cancel", apiKey, nil, nil)
	deadline := time.Now().Add(30 * time.Second)
	for !o.Status.Terminal() {
		if time.Now().After(deadline) {
			t.Fatalf("order %s still %s", o.ID, o.Status)
		}
		a.must(http.StatusOK, "GET", "/v1/orders/"+o.ID+"?wait=5s", apiKey, nil, &o)
	}
	if o.Status != orders.Cancelled {
		t.Fatalf("order ended %s (%s), want cancelled", o.Status, o.Reason)
	}
	// The cancel request's trace holds the compensation it started.
	var cancel tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "POST /v1/orders/:id/cancel" && attr(s, "asyncgate.order.id") == o.ID {
			cancel = s
		}
	}
	if !cancel.SpanContext.IsValid() || attr(cancel, "asyncgate.tenant") != "acme" {
		t.Fatalf("no server span of the cancel naming order %s and its tenant", o.ID)
	}
	spans := traceSpans(t, exp, cancel.SpanContext.TraceID(), map[string]int{
		"send critical": 1, "asynq.process order:compensate": 1, "saga.compensate": 1, "POST /reservations/{id}/release": 1,
	})
	producer := named(spans, "send critical")[0]
	var consumer, compensate tracetest.SpanStub
	for _, c := range named(spans, "asynq.process order:compensate") {
		for _, s := range named(spans, "saga.compensate") {
			if s.Parent.SpanID() == c.SpanContext.SpanID() {
				consumer, compensate = c, s
			}
		}
	}
	if producer.Parent.SpanID() != cancel.SpanContext.SpanID() || producer.SpanKind != trace.SpanKindProducer ||
		attr(producer, "messaging.destination.name") != b.app.Enq.Queue(jobs.QueueCritical, o.ID) || consumer.Parent.SpanID() != producer.SpanContext.SpanID() {
		t.Fatalf("compensation spans: producer %v under %v (want the cancel's %v), consumer under %v",
			producer.SpanContext.SpanID(), producer.Parent.SpanID(), cancel.SpanContext.SpanID(), consumer.Parent.SpanID())
	}
	if attr(compensate, "asyncgate.order.id") != o.ID || attr(compensate, "asyncgate.tenant") != "acme" || attr(compensate, "asynq.task.type") != "order:compensate" {
		t.Fatalf("saga.compensate attributes %v", compensate.Attributes)
	}
	release := named(spans, "POST /reservations/{id}/release")[0]
	if release.SpanKind != trace.SpanKindClient {
		t.Fatalf("release span kind %v", release.SpanKind)
	}
	for _, s := range spans {
		if attr(s, "asyncgate.order.id") != o.ID || attr(s, "asyncgate.tenant") != "acme" {
			t.Errorf("span %q does not name the order: %v", s.Name, s.Attributes)
		}
	}
}
