package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// localReceiver is a developer's receiver: it verifies every request with
// the official Standard Webhooks library under the secret listen printed,
// and answers status (200 unless set).
type localReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	secret   string
	status   int
	got      map[string]int // verified webhook-id → times received
	bodies   map[string][]byte
	refused  int // requests answered with a failure
	badSigns int
}

func newLocalReceiver(t *testing.T) *localReceiver {
	r := &localReceiver{status: 200, got: map[string]int{}, bodies: map[string][]byte{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(r.secret)
		if err == nil {
			err = wh.Verify(body, req.Header)
		}
		if err != nil {
			r.badSigns++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if r.status != 200 {
			r.refused++
			w.WriteHeader(r.status)
			return
		}
		id := req.Header.Get("webhook-id")
		r.got[id]++
		r.bodies[id] = body
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *localReceiver) set(f func(r *localReceiver)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *localReceiver) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[id]
}

// waitOutput polls the process's output until re matches, and returns the
// submatches.
func waitOutput(t *testing.T, p *proctest.Proc, re *regexp.Regexp, what string) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 60s; output:\n%s", what, p.Output())
		}
		time.Sleep(50 * time.Millisecond) // polling a child's output
	}
}

func pollFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 60s: %s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling the receiver's record
	}
}

func devPlace(t *testing.T, base, key string) string {
	t.Helper()
	body := `{"account_id":"acc-1","symbol":"AAPL","side":"buy","quantity":1,"type":"market"}`
	req, _ := http.NewRequest("POST", base+"/v1/orders", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var o orders.Order
	json.NewDecoder(res.Body).Decode(&o)
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("place: %d", res.StatusCode)
	}
	return o.ID
}

// eventIDOf is the event id of the order's terminal change, read from the
// order (its version is the change's sequence number).
func eventIDOf(t *testing.T, base, key, id string) string {
	t.Helper()
	var o orders.Order
	pollFor(t, "order "+id+" ends", func() bool {
		req, _ := http.NewRequest("GET", base+"/v1/orders/"+id+"?wait=5s", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer res.Body.Close()
		json.NewDecoder(res.Body).Decode(&o)
		return o.Status.Terminal()
	})
	return webhooks.EventID("dev", id, o.Version)
}

// `asyncgate listen` as a process against `asyncgate dev`, forwarding to a
// real receiver that verifies signatures: each event arrives signed with
// the printed secret; a refusing receiver is retried until it takes the
// event; killed and restarted, listen resumes from its cursor (the event
// placed while it was down arrives, the first one does not come again) and
// signs with the same secret.
func TestListenForwardsTheFeedToALocalReceiver(t *testing.T) {
	t.Parallel()
	dev := proctest.Start(t, binary, "dev", "--addr", "127.0.0.1:0", "--log-level", "error")
	m := waitOutput(t, dev, regexp.MustCompile(`(?m)^  API        (http://127\.0\.0\.1:\d+)\n  API key    (\S+) `), "dev's API line")
	base, key := m[1], m[2]
	rcv := newLocalReceiver(t)
	state := filepath.Join(t.TempDir(), "listen.json")
	args := []string{"listen", "--api-url", base, "--api-key", key, "--forward-to", rcv.URL + "/hooks", "--state", state}
	secretLine := regexp.MustCompile(`(?m)^Your webhook signing secret is (whsec_\S+)$`)

	ln := proctest.Start(t, binary, args...)
	secret := waitOutput(t, ln, secretLine, "whsec_ line")[1]
	rcv.set(func(r *localReceiver) { r.secret = secret })

	first := devPlace(t, base, key)
	evt1 := eventIDOf(t, base, key, first)
	pollFor(t, "the first event at the receiver", func() bool { return rcv.count(evt1) == 1 })
	waitOutput(t, ln, regexp.MustCompile(`order\.executed +order=`+first+`  `+evt1+`  -> 200 \(`), "the forward's line")

	// The receiver refuses for a while: listen retries the same event.
	rcv.set(func(r *localReceiver) { r.status = http.StatusServiceUnavailable })
	second := devPlace(t, base, key)
	evt2 := eventIDOf(t, base, key, second)
	waitOutput(t, ln, regexp.MustCompile(evt2+`  -> 503 \([^)]*\); retrying in `), "a retry line")
	pollFor(t, "two refusals", func() bool { rcv.mu.Lock(); defer rcv.mu.Unlock(); return rcv.refused >= 2 })
	rcv.set(func(r *localReceiver) { r.status = 200 })
	pollFor(t, "the second event after the outage", func() bool { return rcv.count(evt2) == 1 })

	// Killed, an event comes while it is away, restarted: it resumes.
	ln.Kill()
	third := devPlace(t, base, key)
	evt3 := eventIDOf(t, base, key, third)
	ln2 := proctest.Start(t, binary, args...)
	if again := waitOutput(t, ln2, secretLine, "whsec_ line after the restart")[1]; again != secret {
		t.Fatalf("restarted with secret %s, want the first run's", again)
	}
	pollFor(t, "the event placed while listen was down", func() bool { return rcv.count(evt3) == 1 })
	if n := rcv.count(evt1); n != 1 {
		t.Fatalf("the first event arrived %d times: the restart did not resume from the cursor", n)
	}
	rcv.mu.Lock()
	bad := rcv.badSigns
	body := rcv.bodies[evt3]
	rcv.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d requests failed signature verification", bad)
	}

	// The same bytes as the feed (and so as the webhooks).
	req, _ := http.NewRequest("GET", base+"/v1/events?limit=100", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var page struct{ Data []json.RawMessage }
	json.NewDecoder(res.Body).Decode(&page)
	found := false
	for _, raw := range page.Data {
		found = found || bytes.Equal(raw, body)
	}
	if !found {
		t.Fatalf("the forwarded body of %s is not in the feed:\n%s", evt3, body)
	}
	st, err := os.ReadFile(state)
	if err != nil || !strings.Contains(string(st), `"cursor":`) {
		t.Fatalf("state file: %s, %v", st, err)
	}
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it holds the secret)", fi.Mode().Perm())
	}
}

// A wrong API key ends listen with an error at once, rather than retrying.
func TestListenExitsOnAWrongKey(t *testing.T) {
	t.Parallel()
	dev := proctest.Start(t, binary, "dev", "--addr", "127.0.0.1:0", "--log-level", "error")
	m := waitOutput(t, dev, regexp.MustCompile(`(?m)^  API        (http://127\.0\.0\.1:\d+)\n`), "dev's API line")
	out, code := runBinary(t, 60*time.Second, "listen", "--api-url", m[1], "--api-key", "not-the-key-0123456789",
		"--forward-to", "http://127.0.0.1:9/hooks", "--state", filepath.Join(t.TempDir(), "s.json"))
	if code == 0 || !strings.Contains(out, "the feed refuses us: asyncgate: 401") {
		t.Fatalf("listen with a wrong key: exit %d, output:\n%s", code, out)
	}
}
