package admin_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/internal/app"
)

func TestRedactPayload(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{`{"t":"acme","id":"0190f1a2"}`, `{"id":"0190f1a2","t":"acme"}`},
		{`{"t":"acme","id":"x","seq":3}`, `{"id":"x","seq":3,"t":"acme"}`},
		{`{"secret":"whsec_abc","api_key":"ag_live_x","Authorization":"Bearer k","webhook-signature":"v1,x"}`,
			`{"Authorization":"[redacted]","api_key":"[redacted]","secret":"[redacted]","webhook-signature":"[redacted]"}`},
		{`{"order":{"account_id":"acc-1","symbol":"AAPL","metadata":{"note":"x"},"callback_url":"https://h/?token=1"}}`,
			`{"order":{"account_id":"[redacted]","callback_url":"[redacted]","metadata":"[redacted]","symbol":"AAPL"}}`},
		{`[{"password":"p"},{"n":1.50}]`, `[{"password":"[redacted]"},{"n":1.50}]`},
		{`{"accessToken":{"nested":"deep"},"Session_ID":"s","e-mail":"a@b"}`, `{"Session_ID":"[redacted]","accessToken":"[redacted]","e-mail":"[redacted]"}`},
		{`{"user_email":"a@b","PrivateKey":"k"}`, `{"PrivateKey":"[redacted]","user_email":"[redacted]"}`},
		{`12345678901234567890`, `12345678901234567890`},
		{``, ``},
		{`   `, ``},
		{`not json: secret=1`, `(18 bytes, not JSON: hidden)`},
		{`{"a":1} {"secret":"x"}`, `(22 bytes, not JSON: hidden)`},
		{`{"a":1}]`, `(8 bytes, not JSON: hidden)`},
		{"\xff\xfe", `(2 bytes, not JSON: hidden)`},
	} {
		if got := admin.RedactPayload("order:process", []byte(c.in)); got != c.want {
			t.Errorf("RedactPayload(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzRedactPayload: the view is JSON or says it hides the payload, and no
// value under a sensitive name survives.
func FuzzRedactPayload(f *testing.F) {
	for _, s := range []string{`{"t":"a","id":"b"}`, `{"secret":"x","n":[{"token":1}]}`, `[1,"two",{"key":null}]`, `"str"`, `{`, `{"a":{"b":{"password":"c"}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := admin.RedactPayload("t", in)
		if out == "" || strings.HasPrefix(out, "(") && strings.HasSuffix(out, "hidden)") {
			return
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("RedactPayload(%q) = %q: not JSON: %v", in, out, err)
		}
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, e := range x {
					l := strings.ToLower(k)
					for _, s := range []string{"secret", "token", "password", "key", "signature", "authorization"} {
						if strings.Contains(l, s) && e != admin.Redacted {
							t.Fatalf("RedactPayload(%q) = %q: %q is shown", in, out, k)
						}
					}
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(v)
	})
}

// TestAdminQueues: asynqmon answers under /admin/queues, shows the queues
// and redacted payloads, and refuses changes in read-only mode.
func TestAdminQueues(t *testing.T) {
	t.Parallel()
	for _, readOnly := range []bool{false, true} {
		e := newAuthEnv(t, func(c *app.Config) { c.AdminQueuesReadOnly = readOnly })
		payload := `{"t":"acme","id":"o-1","secret":"whsec_c2VjcmV0","account_id":"acc-1"}`
		if _, err := asynq.NewClientFromRedisClient(e.rdb).Enqueue(asynq.NewTask("order:process", []byte(payload)), asynq.Queue("orders")); err != nil {
			t.Fatal(err)
		}
		ui := e.do(req{method: "GET", path: "/admin/queues", bearer: adminKey})
		ui.want(t, http.StatusOK)
		if !strings.Contains(string(ui.body), `window.FLAG_ROOT_PATH="\/admin\/queues"`) {
			t.Fatalf("no asynqmon page at /admin/queues:\n%s", ui.body)
		}
		wantOfflinePage(t, e, ui)
		// A route of the page (reloaded in the browser) is the same page.
		wantOfflinePage(t, e, uiGet(t, e, "/admin/queues/queues/orders"))
		list := e.do(req{method: "GET", path: "/admin/queues/api/queues", bearer: adminKey})
		list.want(t, http.StatusOK)
		if !strings.Contains(string(list.body), `"queue":"orders"`) {
			t.Fatalf("the queues do not list orders: %s", list.body)
		}
		tasks := e.do(req{method: "GET", path: "/admin/queues/api/queues/orders/pending_tasks", bearer: adminKey})
		tasks.want(t, http.StatusOK)
		if strings.Contains(string(tasks.body), "whsec_") || strings.Contains(string(tasks.body), "acc-1") ||
			!strings.Contains(string(tasks.body), `\"secret\":\"[redacted]\"`) || !strings.Contains(string(tasks.body), `\"id\":\"o-1\"`) {
			t.Fatalf("the payload is not redacted as it should be: %s", tasks.body)
		}
		run := e.do(req{method: "POST", path: "/admin/queues/api/queues/orders/archived_tasks:run_all", bearer: adminKey})
		if readOnly {
			run.want(t, http.StatusMethodNotAllowed)
			if !strings.Contains(string(ui.body), `window.FLAG_READ_ONLY="true"`) {
				t.Fatal("asynqmon's page does not say read-only")
			}
		} else {
			run.want(t, http.StatusOK)
		}
	}
}

// externalRef matches a src or href to another site.
var externalRef = regexp.MustCompile(`(?i)(src|href)\s*=\s*"?(https?:)?//`)

// wantOfflinePage checks that asynqmon's page loads nothing from elsewhere
// (it used to load Google Fonts), that its Content-Security-Policy allows
// only this site and the page's own inline scripts, that its scripts are
// still served, and that it links back to the dashboard.
func wantOfflinePage(t *testing.T, e *authEnv, ui answer) {
	t.Helper()
	ui.want(t, http.StatusOK)
	page := string(ui.body)
	if m := externalRef.FindString(page); m != "" || strings.Contains(page, "googleapis") {
		t.Errorf("asynqmon's page refers to another site (%q):\n%s", m, page)
	}
	if !strings.Contains(page, `<a id="asyncgate-back" href="/admin/"`) {
		t.Errorf("asynqmon's page has no link back to /admin/:\n%s", page)
	}
	if ct := ui.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	csp := ui.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "http") || strings.Contains(csp, "script-src 'self' 'unsafe-inline'") {
		t.Errorf("Content-Security-Policy %q, want this site only and no unsafe-inline script", csp)
	}
	inline := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(page, -1)
	if len(inline) != 2 { // the flags and webpack's loader
		t.Errorf("asynqmon's page has %d inline scripts, want 2", len(inline))
	}
	for _, m := range inline {
		sum := sha256.Sum256([]byte(m[1]))
		if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, h) {
			t.Errorf("the policy does not allow the inline script %.40q… (%s)", m[1], h)
		}
	}
	srcs := regexp.MustCompile(`<script src="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(srcs) == 0 {
		t.Fatal("asynqmon's page loads no script")
	}
	for _, m := range srcs {
		js := uiGet(t, e, m[1])
		js.want(t, http.StatusOK)
		if ct := js.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/javascript") {
			t.Errorf("%s: Content-Type %q", m[1], ct)
		}
	}
}

// uiGet GETs a file or route of asynqmon's page with the admin key, with a
// plain client: they are asynqmon's, not routes of openapi.yaml.
func uiGet(t *testing.T, e *authEnv, path string) answer {
	t.Helper()
	r, err := http.NewRequestWithContext(t.Context(), "GET", e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, body}
}
