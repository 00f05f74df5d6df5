package chaos

import (
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/chaos/invariant"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/internal/redistest"
)

// A deployment is asyncgate as an operator runs it, every part its own process: Redis
// (by default one redis-server with AOF; or a topology: Sentinel, Cluster),
// `asyncgate sim`, one or more `asyncgate api` (two workers by default) and
// `asyncgate worker`s, and a webhook receiver (in the test process, on its own port)
// that verifies every delivery and logs it. Each tenant (two by default) has an API key
// and a webhook endpoint.

// tenantKeys are the API keys of the deployment's first two tenants.
var tenantKeys = map[string]string{
	"alpha": "chaos-alpha-key-0123456789abcdef",
	"beta":  "chaos-beta-key-0123456789abcdefg",
}

// moreTenants name the tenants after the first two.
var moreTenants = []string{"gamma", "delta", "epsilon", "zeta", "eta", "theta"}

// baseFaults are the simulator's faults when no fault is injected: each call takes 200 ms.
const baseFaults = `{"latency":"200ms"}`

// terminalEvents are the events every endpoint subscribes to.
var terminalEvents = []string{"order.executed", "order.rejected", "order.failed", "order.cancelled"}

type deploymentOptions struct {
	// appendFsync is Redis's policy. Defaults to always.
	appendFsync string
	// traceSyncs runs Redis under strace, so that it can crash losing its unsynced AOF tail.
	traceSyncs bool
	// relaxed runs the processes with --durability relaxed (when the binary has the flag).
	relaxed bool
	// topology starts the Redis the processes run on; nil is one redis-server with AOF
	// as appendFsync and traceSyncs say.
	topology func(t *testing.T) topology
	// minReplicas is --redis-min-replicas of every process (strict durability by WAIT).
	minReplicas int
	// apis and workers are the numbers of processes. Default to 1 and 2.
	apis, workers int
	// tenants is the number of tenants, each with a key and an endpoint. Defaults to 2.
	tenants int
	// simLatency is every downstream call's latency. Defaults to 200ms.
	simLatency string
	// extraArgs are added to every API's and worker's command line.
	extraArgs []string
}

type deployment struct {
	t *testing.T
	// redis is the redis-server of the default topology (nil for the others).
	redis    *redistest.Server
	topo     topology
	simURL   string
	apiAddrs []string
	apiArgs  [][]string
	apis     []*proctest.Proc
	workers  []*proctest.Proc
	recv     *receiver
	http     *http.Client
	durFlags []string
	tenants  []string          // in the order clients take turns
	keys     map[string]string // tenant → API key
	faults   string            // the simulator's faults when none is injected
	extra    []string          // added to every API's and worker's command line
	exits    []invariant.Exit  // how the processes a scenario stopped with SIGTERM ended
}

// flagSupport remembers whether the binary's commands take a flag (work of other
// branches lands at different times; the suite uses a flag once it exists).
var flagSupport sync.Map

func binaryHasFlag(cmd, flag string) bool {
	k := cmd + " " + flag
	if v, ok := flagSupport.Load(k); ok {
		return v.(bool)
	}
	out, _ := exec.Command(binary, cmd, "-h").CombinedOutput()
	has := bytes.Contains(out, []byte("-"+flag+" "))
	flagSupport.Store(k, has)
	return has
}

func newDeployment(t *testing.T, o deploymentOptions) *deployment {
	t.Helper()
	t.Setenv("ASYNCGATE_WEBHOOK_ALLOW_HTTP", "true")
	t.Setenv("ASYNCGATE_WEBHOOK_ALLOW_PRIVATE", "true")
	t.Setenv("ASYNCGATE_WEBHOOK_RETRY_SCHEDULE", "1s,2s,4s,8s,15s,30s,60s")
	t.Setenv("ASYNCGATE_WEBHOOK_BREAKER_COOLDOWN", "2s")
	d := &deployment{t: t, keys: make(map[string]string), faults: baseFaults, extra: o.extraArgs,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 5 * time.Second}}
	if o.simLatency != "" {
		d.faults = fmt.Sprintf(`{"latency":%q}`, o.simLatency)
	}
	if o.topology != nil {
		d.topo = o.topology(t)
	} else {
		d.redis = redistest.Start(t, redistest.Options{AOF: true, Appendfsync: o.appendFsync, TraceSyncs: o.traceSyncs})
		d.topo = single{d.redis}
	}
	if binaryHasFlag("api", "durability") {
		d.durFlags = []string{"--durability", "strict"}
		if o.relaxed {
			d.durFlags[1] = "relaxed"
		}
	}
	if o.minReplicas > 0 {
		d.durFlags = append(d.durFlags, "--redis-min-replicas", strconv.Itoa(o.minReplicas))
	}
	o.apis, o.workers, o.tenants = cmp.Or(o.apis, 1), cmp.Or(o.workers, 2), cmp.Or(o.tenants, 2)
	d.tenants = []string{"alpha", "beta"}
	for i := range o.tenants - 2 {
		d.tenants = append(d.tenants, moreTenants[i])
	}
	d.tenants = d.tenants[:o.tenants]
	var keys []string
	for _, tenant := range d.tenants {
		d.keys[tenant] = cmp.Or(tenantKeys[tenant], "chaos-"+tenant+"-key-0123456789abcdef")
		keys = append(keys, d.keys[tenant]+"="+tenant)
	}

	simAddr := freeAddr(t)
	proctest.Start(t, binary, "sim", "--addr", simAddr)
	d.simURL = "http://" + simAddr
	waitHTTP(t, d.simURL+"/_sim/faults")

	for i := range o.apis {
		d.apiAddrs = append(d.apiAddrs, freeAddr(t))
		args := append([]string{"api"}, d.topo.flags()...)
		args = append(args, "--addr", d.apiAddrs[i], "--api-keys", strings.Join(keys, ","), "--rate-limit", "off", "--log-level", "warn")
		d.apiArgs = append(d.apiArgs, append(append(args, d.durFlags...), o.extraArgs...))
		d.apis = append(d.apis, nil)
		d.startAPI(i)
	}
	for range o.workers {
		d.startWorker()
	}
	// Every downstream call takes a while, so that a fault finds orders halfway
	// through their saga (reserved, executing) rather than between them.
	d.setFaults("portfolio", d.faults)
	d.setFaults("execution", d.faults)
	d.recv = newReceiver(t)
	for _, tenant := range d.tenants {
		d.register(tenant)
	}
	return d
}

// apiURL is the first API's base URL; it stays the same across restarts.
func (d *deployment) apiURL() string { return "http://" + d.apiAddrs[0] }

// apiURLOf is the i-th API's base URL (any i: they take turns).
func (d *deployment) apiURLOf(i int) string { return "http://" + d.apiAddrs[i%len(d.apiAddrs)] }

// startAPI starts the i-th API process (again), on its address, and waits until it is up.
func (d *deployment) startAPI(i int) {
	d.t.Helper()
	d.apis[i] = proctest.Start(d.t, binary, d.apiArgs[i]...)
	waitHTTP(d.t, d.apiURLOf(i)+"/healthz")
}

// workerArgs are the arguments of a worker process of the deployment.
func (d *deployment) workerArgs() []string {
	args := append([]string{"worker"}, d.topo.flags()...)
	args = append(args, "--portfolio-url", d.simURL, "--execution-url", d.simURL,
		"--log-level", "warn", "--reconcile-interval", "1s", "--downstream-timeout", "1s")
	return append(append(args, d.durFlags...), d.extra...)
}

// startWorker starts one more worker process.
func (d *deployment) startWorker() *proctest.Proc {
	d.t.Helper()
	w := proctest.Start(d.t, binary, d.workerArgs()...)
	d.workers = append(d.workers, w)
	return w
}

// register creates the tenant's webhook endpoint at the receiver and tells the receiver
// its secret.
func (d *deployment) register(tenant string) {
	d.t.Helper()
	body, _ := json.Marshal(map[string]any{"url": d.recv.url(tenant), "events": terminalEvents, "description": "chaos receiver"})
	req, _ := http.NewRequest(http.MethodPost, d.apiURL()+"/v1/webhook-endpoints", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.keys[tenant])
	req.Header.Set("Content-Type", "application/json")
	res, err := d.http.Do(req)
	if err != nil {
		d.t.Fatalf("register %s's endpoint: %v", tenant, err)
	}
	defer res.Body.Close()
	var ep struct {
		Secret string `json:"secret"`
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated || json.Unmarshal(b, &ep) != nil || ep.Secret == "" {
		d.t.Fatalf("register %s's endpoint: %s %s", tenant, res.Status, b)
	}
	d.recv.setSecret(tenant, ep.Secret)
}

// checker reads the deployment as the invariants' checker does: the public API, the
// simulator's ledger, the receiver's log.
func (d *deployment) checker() *invariant.Checker {
	c := &http.Client{Timeout: 5 * time.Second}
	api := &invariant.HTTPAPI{BaseURL: d.apiURL(), Keys: d.keys, Client: c}
	return &invariant.Checker{
		API:      api,
		Lister:   api,
		Ledger:   &invariant.HTTPLedger{BaseURL: d.simURL, Client: c},
		Receiver: invariant.LogFile(d.recv.logPath),
	}
}

// timeline is an order's events as the API lists them (GET /v1/orders/{id}/events).
func (d *deployment) timeline(a invariant.Accepted) string {
	req, _ := http.NewRequest(http.MethodGet, d.apiURL()+"/v1/orders/"+a.OrderID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+d.keys[a.Tenant])
	res, err := d.http.Do(req)
	if err != nil {
		return err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.Status + " " + string(b)
}

// setFaults sets the simulator's faults of a service ("portfolio" or "execution"),
// through its admin API.
func (d *deployment) setFaults(service, faults string) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodPut, d.simURL+"/_sim/faults/"+service, strings.NewReader(faults))
	req.Header.Set("Content-Type", "application/json")
	res, err := d.http.Do(req)
	if err != nil {
		d.t.Fatalf("set %s faults: %v", service, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode >= 300 {
		d.t.Fatalf("set %s faults: %s %s", service, res.Status, b)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not up after 30s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // poll with a deadline: another process starts
	}
}

// receiver is the integrators' webhook receiver: /hooks/{tenant} verifies the Standard
// Webhooks signature with the tenant's secret and logs every delivery, one JSON line
// each, to logPath. It can go down (its port refuses connections) and be slow.
type receiver struct {
	t       *testing.T
	addr    string
	logPath string

	mu      sync.Mutex
	secrets map[string][]byte
	log     *os.File
	srv     *http.Server
	slow    map[string]time.Duration // per tenant
	got     atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{t: t, addr: freeAddr(t), logPath: filepath.Join(t.TempDir(), "deliveries.jsonl"),
		secrets: make(map[string][]byte), slow: make(map[string]time.Duration)}
	f, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	r.log = f
	r.up()
	t.Cleanup(func() {
		r.down()
		r.mu.Lock()
		r.log.Close()
		r.mu.Unlock()
	})
	return r
}

func (r *receiver) url(tenant string) string { return "http://" + r.addr + "/hooks/" + tenant }

func (r *receiver) setSecret(tenant, secret string) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || !strings.HasPrefix(secret, "whsec_") {
		r.t.Fatalf("secret of %s is not whsec_<base64>", tenant)
	}
	r.mu.Lock()
	r.secrets[tenant] = key
	r.mu.Unlock()
}

// up listens again on the receiver's port.
func (r *receiver) up() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return
	}
	var ln net.Listener
	var err error
	for range 100 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Errorf("receiver: listen again on %s: %v", r.addr, err)
		return
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 5 * time.Second}
	go r.srv.Serve(ln)
}

// down closes the port and every connection: deliveries are refused.
func (r *receiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// setSlow makes the tenant's endpoint take d to answer (0: at once).
func (r *receiver) setSlow(tenant string, d time.Duration) {
	r.mu.Lock()
	r.slow[tenant] = d
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	tenant, ok := strings.CutPrefix(req.URL.Path, "/hooks/")
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if !ok || err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	secret, slow := r.secrets[tenant], r.slow[tenant]
	r.mu.Unlock()
	id := req.Header.Get("webhook-id")
	rec := invariant.Delivery{Tenant: tenant, WebhookID: id, Type: ev.Type, OrderID: ev.Data.ID,
		SignatureValid: verify(secret, id, req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature"), body),
		At:             time.Now()}
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-req.Context().Done():
			return // the sender gave up: not a delivery
		}
	}
	line, _ := json.Marshal(rec)
	r.mu.Lock()
	r.log.Write(append(line, '\n'))
	r.mu.Unlock()
	r.got.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// verify checks a Standard Webhooks signature on its own (not with the code under test):
// one of the space-separated "v1,<base64>" values must be the HMAC-SHA256 of
// "id.timestamp.body" under the secret, and the timestamp within 5 minutes.
func verify(secret []byte, id, ts, sigs string, body []byte) bool {
	if secret == nil || id == "" || ts == "" {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		if got, err := base64.StdEncoding.DecodeString(b64); err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// clients are honest integrators of every tenant: each places its orders one at a time,
// and retries a placement with the same Idempotency-Key and body on errors and timeouts
// until it gets an answer it can act on. With several API processes, the clients take
// turns, and a retry after an error goes to the next one, as behind a load balancer.
type clients struct {
	d        *deployment
	keyOnly  bool // no client_order_id: only the Idempotency-Key names the intent
	mu       sync.Mutex
	accepted []invariant.Accepted
	refused  []string // answers a client could not act on (4xx other than 409)
	gaveUp   int      // placements given up after retrying for a minute
	retries  atomic.Int64
}

// place places n orders, tenants (and APIs) taking turns, at an even pace over within, with up to
// 16 in flight, and returns when each got its answer or was given up. As the API's
// guide asks, each order carries a client_order_id, unless keyOnly.
func (d *deployment) place(n int, within time.Duration, keyOnly bool) *clients {
	cl := &clients{d: d, keyOnly: keyOnly}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(within * time.Duration(i) / time.Duration(n))))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cl.placeOne(d.tenants[i%len(d.tenants)], i%4, i)
		})
	}
	wg.Wait()
	return cl
}

// placeOne places one order. Its metadata names the client's intent (the
// Idempotency-Key), so that the checker can tell which orders one intent made.
func (cl *clients) placeOne(tenant string, account, api int) {
	key := rand.Text()
	coid := fmt.Sprintf(`"client_order_id":%q,`, key)
	if cl.keyOnly {
		coid = ""
	}
	body := fmt.Sprintf(`{"account_id":"acc-%d","symbol":"AAPL","side":"buy","quantity":1,"type":"market",%s"metadata":{"intent":%q}}`, account, coid, key)
	giveUp := time.Now().Add(time.Minute)
	for wait := 100 * time.Millisecond; ; wait = min(wait*2, time.Second) {
		req, _ := http.NewRequest(http.MethodPost, cl.d.apiURLOf(api)+"/v1/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+cl.d.keys[tenant])
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := cl.d.http.Do(req)
		if err == nil {
			var o struct {
				ID   string `json:"id"`
				Code string `json:"code"`
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusConflict && json.Unmarshal(b, &o) == nil && o.Code == "duplicate_client_order_id" {
				// Placed before, by a request whose answer was lost: the order is there.
				if id, ok := strings.CutPrefix(res.Header.Get("Location"), "/v1/orders/"); ok && id != "" {
					res.StatusCode, o.ID = http.StatusAccepted, id
				}
			}
			switch {
			case res.StatusCode == http.StatusAccepted && json.Unmarshal(b, &o) == nil && o.ID != "":
				cl.mu.Lock()
				cl.accepted = append(cl.accepted, invariant.Accepted{Tenant: tenant, Key: key, OrderID: o.ID, At: time.Now()})
				cl.mu.Unlock()
				return
			case res.StatusCode < 500 && res.StatusCode != http.StatusConflict && res.StatusCode != http.StatusTooManyRequests:
				cl.mu.Lock()
				cl.refused = append(cl.refused, fmt.Sprintf("%s: %s", res.Status, b))
				cl.mu.Unlock()
				return
			}
		}
		api++ // the next API, if there are several
		if time.Now().After(giveUp) {
			cl.mu.Lock()
			cl.gaveUp++
			cl.mu.Unlock()
			return
		}
		cl.retries.Add(1)
		time.Sleep(wait)
	}
}

// slowBodies opens n connections to the API that send a POST's headers and then trickle
// its body a byte a second, half with a valid key and half without, until stop is
// closed. closed says how many the server has closed (or refused) so far.
func (d *deployment) slowBodies(n int, stop <-chan struct{}) (closed func() int) {
	var count atomic.Int64
	for i := range n {
		conn, err := net.Dial("tcp", d.apiAddrs[0])
		if err != nil {
			count.Add(1) // refused at once: the server caps connections
			continue
		}
		auth := ""
		if i%2 == 0 {
			auth = "Authorization: Bearer " + d.keys["alpha"] + "\r\n"
		}
		fmt.Fprintf(conn, "POST /v1/orders HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{", d.apiAddrs[0], auth)
		go func() {
			defer conn.Close()
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if _, err := conn.Write([]byte(" ")); err != nil {
						count.Add(1)
						return
					}
				}
			}
		}()
	}
	return func() int { return int(count.Load()) }
}
