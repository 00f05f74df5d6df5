package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/jobs"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

const otherKey = "other-key-0123456789abcdef" // tenant globex

// fastWebhooks lets webhooks reach receivers on 127.0.0.1 and compresses
// the retry schedule: 5 attempts, the retries a second apart (Asynq's
// retry times are whole seconds).
func fastWebhooks(c *app.Config) {
	c.Webhooks.Guard = webhooks.GuardConfig{AllowHTTP: true, AllowPrivate: true}
	c.Webhooks.Store.MaxAttempts = 5
	c.Webhooks.Deliverer.Schedule = []time.Duration{10 * time.Millisecond}
	c.Webhooks.Deliverer.Jitter = -1
	c.Webhooks.Deliverer.Timeout = 5 * time.Second
}

// hit is a request a receiver got.
type hit struct {
	path   string
	header http.Header
	body   []byte
}

// hookReceiver is a real HTTP receiver on 127.0.0.1 that records what it
// gets on a channel and answers with its handler (200 by default).
type hookReceiver struct {
	*httptest.Server
	hits    chan hit
	mu      sync.Mutex
	handler http.HandlerFunc
	count   atomic.Int64
}

func newHookReceiver(t *testing.T) *hookReceiver {
	t.Helper()
	r := &hookReceiver{hits: make(chan hit, 100)}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.count.Add(1)
	r.hits <- hit{req.URL.Path, req.Header.Clone(), body}
	r.mu.Lock()
	h := r.handler
	r.mu.Unlock()
	if h != nil {
		h(w, req)
	}
}

func (r *hookReceiver) answer(h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handler = h
}

func (r *hookReceiver) next(t *testing.T) hit {
	t.Helper()
	select {
	case h := <-r.hits:
		return h
	case <-time.After(20 * time.Second):
		t.Fatal("the receiver got no request within 20s")
		return hit{}
	}
}

// api calls the API through apitest, so that every answer is checked
// against openapi.yaml.
type api struct {
	t *testing.T
	c *http.Client
}

func (b *bundle) api(t *testing.T) *api { return &api{t, apitest.Client(t, b.url)} }

func (a *api) call(method, path, key string, body any) response {
	a.t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, _ := json.Marshal(v)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, data}
}

// must calls and checks the status, decoding the body into v.
func (a *api) must(status int, method, path, key string, body, v any) response {
	a.t.Helper()
	r := a.call(method, path, key, body)
	if r.status != status {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, status)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			a.t.Fatalf("%s %s: decode %s: %v", method, path, r.body, err)
		}
	}
	return r
}

type endpointWithSecret struct {
	webhooks.Endpoint
	Secret string `json:"secret"`
}

func (a *api) createEndpoint(key, url string, events ...string) (webhooks.Endpoint, webhooks.Secret) {
	a.t.Helper()
	var ep endpointWithSecret
	r := a.must(http.StatusCreated, "POST", "/v1/webhook-endpoints", key, map[string]any{"url": url, "events": events}, &ep)
	if r.header.Get("Location") != "/v1/webhook-endpoints/"+ep.ID {
		a.t.Fatalf("Location = %q", r.header.Get("Location"))
	}
	return ep.Endpoint, webhooks.MustParseSecret(ep.Secret)
}

func (a *api) deliveries(key, endpointID, query string) []webhooks.Delivery {
	a.t.Helper()
	var list struct{ Data []webhooks.Delivery }
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+endpointID+"/deliveries"+query, key, nil, &list)
	return list.Data
}

// onlyDelivery polls until the endpoint has exactly one delivery for which
// cond holds, and returns it.
func (a *api) onlyDelivery(key, endpointID, what string, cond func(webhooks.Delivery) bool) webhooks.Delivery {
	a.t.Helper()
	var d webhooks.Delivery
	pollUntil(a.t, 30*time.Second, what, func() bool {
		list := a.deliveries(key, endpointID, "")
		if len(list) != 1 {
			return false
		}
		d = list[0]
		return cond(d)
	})
	return d
}

func verifyOfficial(t *testing.T, secret webhooks.Secret, h hit) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret.String())
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(h.body, h.header)
}

type eventBody struct {
	ID        string
	Type      string
	CreatedAt time.Time `json:"created_at"`
	Sequence  int64
	Data      orders.Order
}

func decodeEvent(t *testing.T, h hit) eventBody {
	t.Helper()
	var ev eventBody
	if err := json.Unmarshal(h.body, &ev); err != nil {
		t.Fatalf("event body %s: %v", h.body, err)
	}
	return ev
}

func TestWebhookDeliveredAndVerifiedByTheOfficialLibrary(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, secret := a.createEndpoint(apiKey, rcv.URL+"/hooks", webhooks.EventOrderExecuted)
	var cb struct{ Secret string }
	a.must(http.StatusOK, "POST", "/v1/callback-secret/rotate", apiKey, nil, &cb)
	cbSecret := webhooks.MustParseSecret(cb.Secret)

	o := b.place(t, order(func(m map[string]any) { m["callback_url"] = rcv.URL + "/callback" }))
	got := map[string]hit{}
	for range 2 {
		h := rcv.next(t)
		got[h.path] = h
	}
	hook, callback := got["/hooks"], got["/callback"]
	if hook.body == nil || callback.body == nil {
		t.Fatalf("requests at %v, want /hooks and /callback", slices.Collect(func(yield func(string) bool) {
			for p := range got {
				yield(p)
			}
		}))
	}
	if err := verifyOfficial(t, secret, hook); err != nil {
		t.Fatalf("the official library rejects the endpoint's delivery: %v", err)
	}
	if err := verifyOfficial(t, cbSecret, callback); err != nil {
		t.Fatalf("the official library rejects the callback: %v", err)
	}
	ev := decodeEvent(t, hook)
	done := b.waitTerminal(t, o.ID, 20*time.Second)
	equal(t, "event type", ev.Type, "order.executed")
	equal(t, "event data", ev.Data.ID+" "+string(ev.Data.Status), o.ID+" executed")
	equal(t, "sequence", ev.Sequence, done.Version)
	equal(t, "webhook-id", hook.header.Get("webhook-id"), ev.ID)
	equal(t, "same event at the callback", callback.header.Get("webhook-id"), ev.ID)
	if !bytes.Equal(hook.body, callback.body) {
		t.Errorf("the endpoint and the callback got different bodies:\n%s\n%s", hook.body, callback.body)
	}
	if want := webhooks.EventID("acme", o.ID, done.Version); ev.ID != want {
		t.Errorf("event id %s, want %s", ev.ID, want)
	}

	d := a.onlyDelivery(apiKey, ep.ID, "delivery recorded as delivered", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	if d.EventID != ev.ID || d.AttemptCount != 1 || len(d.Attempts) != 1 || d.Attempts[0].StatusCode != 200 {
		t.Fatalf("delivery = %+v", d)
	}
	var one webhooks.Delivery
	a.must(http.StatusOK, "GET", "/v1/webhook-deliveries/"+d.ID, apiKey, nil, &one)
	equal(t, "delivery by id", one.ID+" "+one.Status, d.ID+" delivered")

	// A rotation: the next event carries both signatures, and the official
	// library accepts either secret, and neither a stranger's nor a
	// tampered body.
	var rotated endpointWithSecret
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/rotate-secret", apiKey, nil, &rotated)
	newSecret := webhooks.MustParseSecret(rotated.Secret)
	if rotated.PreviousSecretExpiresAt == nil {
		t.Fatalf("rotation = %+v, want previous_secret_expires_at", rotated)
	}
	b.place(t, order())
	h := rcv.next(t)
	equal(t, "signatures during rotation", len(strings.Fields(h.header.Get("webhook-signature"))), 2)
	for name, s := range map[string]webhooks.Secret{"old": secret, "new": newSecret} {
		if err := verifyOfficial(t, s, h); err != nil {
			t.Errorf("official library, %s secret during rotation: %v", name, err)
		}
	}
	stranger, _ := webhooks.NewSecret()
	if err := verifyOfficial(t, stranger, h); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("official library, wrong secret: %v, want ErrNoMatchingSignature", err)
	}
	h.body = bytes.Replace(h.body, []byte(`"executed"`), []byte(`"rejected"`), 1)
	if err := verifyOfficial(t, newSecret, h); !errors.Is(err, standardwebhooks.ErrNoMatchingSignature) {
		t.Errorf("official library, tampered body: %v, want ErrNoMatchingSignature", err)
	}
}

func TestWebhookReceiverDownThenBack(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	// A port with nothing listening: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ep, _ := a.createEndpoint(apiKey, "http://"+addr+"/hooks")

	b.place(t, order())
	a.onlyDelivery(apiKey, ep.ID, "two failed attempts", func(d webhooks.Delivery) bool { return d.AttemptCount >= 2 })

	// The receiver comes back on the same port.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	rcv := &hookReceiver{hits: make(chan hit, 10)}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(rcv.serve)}}
	srv.Start()
	t.Cleanup(srv.Close)

	h := rcv.next(t)
	d := a.onlyDelivery(apiKey, ep.ID, "delivered after the receiver came back", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	equal(t, "webhook-id", h.header.Get("webhook-id"), d.EventID)
	if d.AttemptCount < 3 || len(d.Attempts) != d.AttemptCount {
		t.Fatalf("attempts = %d (%d logged), want the failed ones and the last", d.AttemptCount, len(d.Attempts))
	}
	for _, at := range d.Attempts[:len(d.Attempts)-1] {
		if at.StatusCode != 0 || !strings.Contains(at.Error, "connection refused") {
			t.Errorf("attempt while down = %+v, want connection refused", at)
		}
	}
	if last := d.Attempts[len(d.Attempts)-1]; last.StatusCode != 200 || last.Error != "" {
		t.Errorf("last attempt = %+v", last)
	}
}

func TestWebhookFailingForeverIsArchivedThenRedelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) { c.Webhooks.Store.MaxAttempts = 3 })
	a := b.api(t)
	rcv := newHookReceiver(t)
	var succeeded atomic.Int64
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())

	d := a.onlyDelivery(apiKey, ep.ID, "delivery failed", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryFailed })
	equal(t, "attempts", d.AttemptCount, 3)
	var ids []string
	for range 3 {
		ids = append(ids, rcv.next(t).header.Get("webhook-id"))
	}
	equal(t, "webhook-id on every attempt", ids, []string{d.EventID, d.EventID, d.EventID})
	insp := b.app.Inspector()
	pollUntil(t, 10*time.Second, "task archived", func() bool {
		info, err := insp.GetTaskInfo(b.app.Notifier.DeliveryQueue(d.ID), d.ID)
		return err == nil && info.State == asynq.TaskStateArchived
	})

	// Fixed, and redelivered from the dead-letter queue: once.
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { succeeded.Add(1) })
	var retried webhooks.Delivery
	r := a.must(http.StatusAccepted, "POST", "/v1/webhook-deliveries/"+d.ID+"/retry", apiKey, nil, &retried)
	equal(t, "Location", r.header.Get("Location"), "/v1/webhook-deliveries/"+d.ID)
	equal(t, "status after retry", retried.Status, webhooks.DeliveryPending)
	equal(t, "redelivered webhook-id", rcv.next(t).header.Get("webhook-id"), d.EventID)
	d = a.onlyDelivery(apiKey, ep.ID, "delivered after the retry", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	equal(t, "attempts after the retry", d.AttemptCount, 4)
	pollUntil(t, 10*time.Second, "task done", func() bool {
		_, err := insp.GetTaskInfo(b.app.Notifier.DeliveryQueue(d.ID), d.ID)
		return errors.Is(err, asynq.ErrTaskNotFound)
	})
	equal(t, "successful deliveries", succeeded.Load(), int64(1))
	equal(t, "requests", rcv.count.Load(), int64(4))
}

func TestWebhookHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	var n atomic.Int64
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	})
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())
	d := a.onlyDelivery(apiKey, ep.ID, "delivered after Retry-After", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	if len(d.Attempts) != 2 || d.Attempts[0].StatusCode != 429 || !strings.Contains(d.Attempts[0].Error, "Retry-After 2s honoured") {
		t.Fatalf("attempts = %+v", d.Attempts)
	}
	if gap := d.Attempts[1].At.Sub(d.Attempts[0].At); gap < 2*time.Second {
		t.Fatalf("the retry came %s after the 429, before its Retry-After of 2s", gap)
	}
}

func TestWebhookGoneDisablesEndpointUntilEnabled(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	rcv.answer(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) })
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())
	first := rcv.next(t)

	d := a.onlyDelivery(apiKey, ep.ID, "delivery held", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryHeld })
	var got webhooks.Endpoint
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, &got)
	equal(t, "endpoint status", got.Status+": "+got.DisabledReason, "disabled: "+webhooks.ReasonGone)
	// While disabled, a retry is refused; enabling redelivers.
	p := a.must(http.StatusConflict, "POST", "/v1/webhook-deliveries/"+d.ID+"/retry", apiKey, nil, nil)
	equal(t, "content type", p.header.Get("Content-Type"), "application/problem+json")

	rcv.answer(nil)
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/enable", apiKey, nil, &got)
	equal(t, "status after enable", got.Status, webhooks.EndpointEnabled)
	equal(t, "redelivered webhook-id", rcv.next(t).header.Get("webhook-id"), first.header.Get("webhook-id"))
	a.onlyDelivery(apiKey, ep.ID, "delivered after enable", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })

	// Disabled by its owner: events wait, then go on enable.
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/disable", apiKey, nil, &got)
	equal(t, "status after disable", got.Status+": "+got.DisabledReason, "disabled: "+webhooks.ReasonDisabledByUser)
	o := b.place(t, order())
	b.waitTerminal(t, o.ID, 20*time.Second)
	pollUntil(t, 20*time.Second, "a held delivery for the new order", func() bool {
		return len(a.deliveries(apiKey, ep.ID, "?status=held")) == 1
	})
	equal(t, "requests while disabled", rcv.count.Load(), int64(2))
	a.must(http.StatusOK, "POST", "/v1/webhook-endpoints/"+ep.ID+"/enable", apiKey, nil, nil)
	equal(t, "the held event", decodeEvent(t, rcv.next(t)).Data.ID, o.ID)
}

func TestWebhookTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	b.place(t, order())
	rcv.next(t)
	d := a.onlyDelivery(apiKey, ep.ID, "delivered", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })

	var list struct{ Data []webhooks.Endpoint }
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints", otherKey, nil, &list)
	equal(t, "globex's endpoints", len(list.Data), 0)
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/webhook-endpoints/" + ep.ID},
		{"DELETE", "/v1/webhook-endpoints/" + ep.ID},
		{"POST", "/v1/webhook-endpoints/" + ep.ID + "/rotate-secret"},
		{"POST", "/v1/webhook-endpoints/" + ep.ID + "/disable"},
		{"POST", "/v1/webhook-endpoints/" + ep.ID + "/enable"},
		{"GET", "/v1/webhook-endpoints/" + ep.ID + "/deliveries"},
		{"GET", "/v1/webhook-deliveries/" + d.ID},
		{"POST", "/v1/webhook-deliveries/" + d.ID + "/retry"},
	} {
		r := a.call(c.method, c.path, otherKey, nil)
		equal(t, c.method+" "+c.path+" by another tenant", r.status, http.StatusNotFound)
	}
	// Untouched for its owner.
	var got webhooks.Endpoint
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, &got)
	equal(t, "owner's endpoint", got.Status, webhooks.EndpointEnabled)
	equal(t, "requests", rcv.count.Load(), int64(1))
}

// fakeDNS is a resolver that tests rewrite.
type fakeDNS struct {
	mu    sync.Mutex
	hosts map[string]string
}

func (f *fakeDNS) set(host, ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts[host] = ip
}

func (f *fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip, ok := f.hosts[host]; ok {
		return []netip.Addr{netip.MustParseAddr(ip)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func TestWebhookRegistrationRefusesBadURLs(t *testing.T) {
	t.Parallel()
	dns := &fakeDNS{hosts: map[string]string{"internal.example.com": "10.0.0.7", "hooks.example.com": "93.184.216.34"}}
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Webhooks.Guard = webhooks.GuardConfig{AllowHTTP: true, Resolver: dns} // http allowed, private not
	})
	a := b.api(t)
	type problem struct {
		Code, Detail string
		Errors       []struct{ Field, Reason string }
	}
	for _, tt := range []struct {
		name, body, code, detail string
	}{
		{"loopback", `{"url":"http://127.0.0.1:8080/hooks"}`, "url_not_allowed", "127.0.0.1 is a loopback address"},
		{"metadata", `{"url":"http://169.254.169.254/latest/meta-data/"}`, "url_not_allowed", "169.254.169.254 is a cloud metadata address"},
		{"IPv6 loopback", `{"url":"http://[::1]/hooks"}`, "url_not_allowed", "::1 is a loopback address"},
		{"name resolving to a private address", `{"url":"http://internal.example.com/hooks"}`, "url_not_allowed", "10.0.0.7 is a private address (internal.example.com resolves to it)"},
		{"unknown host", `{"url":"http://nowhere.example.com/hooks"}`, "validation_failed", "does not resolve"},
		{"not a URL", `{"url":"hooks"}`, "validation_failed", "https"},
		{"unknown event", `{"url":"http://hooks.example.com/","events":["order.created"]}`, "validation_failed", "invalid fields"},
		{"unknown field", `{"url":"http://hooks.example.com/","secret":"mine"}`, "validation_failed", "unknown field"},
		{"wrong type", `{"url":"http://hooks.example.com/","events":"order.executed"}`, "validation_failed", "events"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := a.call("POST", "/v1/webhook-endpoints", apiKey, tt.body)
			equal(t, "status", r.status, http.StatusUnprocessableEntity)
			var p problem
			if err := json.Unmarshal(r.body, &p); err != nil {
				t.Fatal(err)
			}
			equal(t, "code", p.Code, tt.code)
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail %q does not say %q", p.Detail, tt.detail)
			}
			if tt.code == "url_not_allowed" && (len(p.Errors) != 1 || p.Errors[0].Field != "url") {
				t.Errorf("errors = %+v, want the url", p.Errors)
			}
		})
	}
	var list struct{ Data []webhooks.Endpoint }
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints", apiKey, nil, &list)
	equal(t, "endpoints after bad input", len(list.Data), 0)
	a.createEndpoint(apiKey, "http://hooks.example.com/hooks") // a public one passes
}

// TestWebhookDNSRebindingIsBlockedAtConnect registers a name that resolves
// to a public address, then points it at a receiver on loopback.
func TestWebhookDNSRebindingIsBlockedAtConnect(t *testing.T) {
	t.Parallel()
	rcv := newHookReceiver(t)
	dns := &fakeDNS{hosts: map[string]string{"hooks.example.com": "93.184.216.34"}}
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Webhooks.Guard = webhooks.GuardConfig{AllowHTTP: true, Resolver: dns}
	})
	a := b.api(t)
	port := rcv.URL[strings.LastIndex(rcv.URL, ":")+1:]
	ep, _ := a.createEndpoint(apiKey, "http://hooks.example.com:"+port+"/hooks")
	dns.set("hooks.example.com", "127.0.0.1")

	b.place(t, order())
	d := a.onlyDelivery(apiKey, ep.ID, "an attempt", func(d webhooks.Delivery) bool { return d.AttemptCount >= 1 })
	if at := d.Attempts[0]; !strings.Contains(at.Error, "refused at connect") || !strings.Contains(at.Error, "127.0.0.1 is a loopback address") {
		t.Fatalf("attempt = %+v, want refused at connect", at)
	}
	equal(t, "requests that reached the receiver", rcv.count.Load(), int64(0))
}

// TestWebhookWorkerCrashDuringDelivery stops the worker while a delivery
// hangs at the receiver: Asynq puts the task back, another worker delivers
// it, with the same webhook-id.
func TestWebhookWorkerCrashDuringDelivery(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) { c.Worker = false })
	a := b.api(t)
	rcv := newHookReceiver(t)
	var n atomic.Int64
	rcv.answer(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			<-r.Context().Done() // hangs until the worker goes away
		}
	})
	ep, _ := a.createEndpoint(apiKey, rcv.URL)

	simSrv := httptest.NewServer(b.sim)
	t.Cleanup(simSrv.Close)
	worker := func() *app.App {
		cfg := fastConfig(b.rdb, simSrv.URL)
		fastWebhooks(&cfg)
		cfg.API, cfg.Logger = false, testLogger(t)
		cfg.WorkerPool.ShutdownTimeout = 100 * time.Millisecond
		w, err := app.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Start(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		return w
	}
	first := worker()
	o := b.place(t, order())
	hung := rcv.next(t)
	first.Shutdown(context.Background()) // the delivery is in flight

	second := worker()
	t.Cleanup(func() { second.Shutdown(context.Background()) })
	again := rcv.next(t)
	equal(t, "webhook-id after the crash", again.header.Get("webhook-id"), hung.header.Get("webhook-id"))
	equal(t, "event", decodeEvent(t, again).Data.ID, o.ID)
	a.onlyDelivery(apiKey, ep.ID, "delivered by the second worker", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
}

// TestWebhookOutboxRedrivesALostFanout ends an order without the saga's
// hook (as if the process died right after the transition): the
// reconciler finds it in the outbox and fans it out, once.
func TestWebhookOutboxRedrivesALostFanout(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks, func(c *app.Config) {
		c.Worker = false
		c.Reconciler.Grace = time.Millisecond
	})
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	o := b.place(t, order())
	ctx := context.Background()
	l, err := b.app.Store.Acquire(ctx, "acme", o.ID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.app.Store.Transition(ctx, l, orders.Change{To: orders.Rejected, Reason: "risk_limit"}); err != nil {
		t.Fatal(err)
	}

	simSrv := httptest.NewServer(b.sim)
	t.Cleanup(simSrv.Close)
	cfg := fastConfig(b.rdb, simSrv.URL)
	fastWebhooks(&cfg)
	cfg.API, cfg.Logger, cfg.Reconciler.Grace = false, testLogger(t), time.Millisecond
	w, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Shutdown(context.Background()) })
	st, ran, err := w.Reconciler().RunLocked(ctx)
	if err != nil || !ran {
		t.Fatalf("reconcile: ran=%v err=%v", ran, err)
	}
	equal(t, "outbox entries re-driven", st.Outbox, 1)
	ev := decodeEvent(t, rcv.next(t))
	equal(t, "event", ev.Type+" "+ev.Data.ID, "order.rejected "+o.ID)
	a.onlyDelivery(apiKey, ep.ID, "delivered", func(d webhooks.Delivery) bool { return d.Status == webhooks.DeliveryDelivered })
	pollUntil(t, 10*time.Second, "outbox emptied", func() bool {
		ids, err := b.app.Store.Outbox(ctx, "acme", time.Now().Add(time.Hour), 10)
		return err == nil && len(ids) == 0
	})

	// A duplicate fan-out of the same change (a retry, a second re-drive)
	// produces nothing new.
	payload, _ := json.Marshal(map[string]any{"t": "acme", "id": o.ID, "seq": ev.Sequence})
	if err := w.Notifier.FanoutTask(ctx, asynq.NewTask(jobs.TypeWebhookFanout, payload)); err != nil {
		t.Fatal(err)
	}
	equal(t, "deliveries after a duplicate fan-out", len(a.deliveries(apiKey, ep.ID, "")), 1)
	info := queueTotals(t, b.app.Inspector(), jobs.QueueWebhooks)
	equal(t, "webhook tasks queued by the duplicate", info.Pending+info.Active+info.Scheduled+info.Retry, 0)
	st, _, _ = w.Reconciler().RunLocked(ctx)
	equal(t, "outbox entries on a second pass", st.Outbox, 0)
	equal(t, "requests", rcv.count.Load(), int64(1))
}

func TestWebhookListFiltersAndBadQueries(t *testing.T) {
	t.Parallel()
	b := setup(t, fastWebhooks)
	a := b.api(t)
	rcv := newHookReceiver(t)
	ep, _ := a.createEndpoint(apiKey, rcv.URL)
	for range 3 {
		b.place(t, order())
		rcv.next(t)
	}
	pollUntil(t, 20*time.Second, "three delivered", func() bool {
		return len(a.deliveries(apiKey, ep.ID, "?status=delivered")) == 3
	})
	var page struct {
		Data       []webhooks.Delivery
		NextCursor string `json:"next_cursor"`
	}
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID+"/deliveries?limit=2", apiKey, nil, &page)
	if len(page.Data) != 2 || page.NextCursor == "" {
		t.Fatalf("first page = %d deliveries, cursor %q", len(page.Data), page.NextCursor)
	}
	cursor := page.NextCursor
	page.Data, page.NextCursor = nil, ""
	a.must(http.StatusOK, "GET", "/v1/webhook-endpoints/"+ep.ID+"/deliveries?limit=2&cursor="+cursor, apiKey, nil, &page)
	if len(page.Data) != 1 || page.NextCursor != "" {
		t.Fatalf("last page = %d deliveries, cursor %q", len(page.Data), page.NextCursor)
	}
	equal(t, "failed", len(a.deliveries(apiKey, ep.ID, "?status=failed")), 0)
	for _, q := range []string{"?status=done", "?limit=0", "?limit=101", "?cursor=nope"} {
		equal(t, "GET deliveries"+q, a.call("GET", "/v1/webhook-endpoints/"+ep.ID+"/deliveries"+q, apiKey, nil).status, http.StatusUnprocessableEntity)
	}
	for _, p := range []string{"/v1/webhook-endpoints/nope", "/v1/webhook-endpoints/ep_0190f1a2-7b3c-7d4e-8f90-123456789abc", "/v1/webhook-deliveries/dlv_0190f1a2-7b3c-7d4e-8f90-123456789abc"} {
		equal(t, "GET "+p, a.call("GET", p, apiKey, nil).status, http.StatusNotFound)
	}
	a.must(http.StatusNoContent, "DELETE", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil, nil)
	equal(t, "GET after delete", a.call("GET", "/v1/webhook-endpoints/"+ep.ID, apiKey, nil).status, http.StatusNotFound)
}

// TestWebhookSpecMatchesCode checks the webhook enums of openapi.yaml
// against the Go values they document.
func TestWebhookSpecMatchesCode(t *testing.T) {
	t.Parallel()
	enum := func(schema string) []string { return apitest.Enum(t, schema) }
	if diff := cmp.Diff(webhooks.EventTypes, enum("WebhookEventType")); diff != "" {
		t.Errorf("WebhookEventType (-code +spec):\n%s", diff)
	}
	if diff := cmp.Diff(webhooks.DeliveryStatuses, enum("WebhookDeliveryStatus")); diff != "" {
		t.Errorf("WebhookDeliveryStatus (-code +spec):\n%s", diff)
	}
	if diff := cmp.Diff([]string{webhooks.EndpointEnabled, webhooks.EndpointDisabled}, enum("WebhookEndpointStatus")); diff != "" {
		t.Errorf("WebhookEndpointStatus (-code +spec):\n%s", diff)
	}
	for _, s := range orders.Statuses {
		if s.Terminal() && !slices.Contains(webhooks.EventTypes, string(orders.StatusEvent(s))) {
			t.Errorf("terminal status %s has no webhook event type", s)
		}
	}
}
