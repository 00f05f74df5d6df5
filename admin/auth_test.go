package admin_test

// Tests of the admin authentication: Bearer admin keys, the login page's
// session cookie, CSRF, logout, and the authorization of every /admin
// route, on the real App (API only) over a real redis-server, through
// apitest, so that every answer is also validated against openapi.yaml.

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/admin"
	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/apptest"
	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/server"
)

// authEnv is an API (no worker) with a tenant key (keyA), an admin key
// (adminKey) and a clock the test can move.
type authEnv struct {
	t    *testing.T
	url  string
	app  *app.App
	c    *http.Client
	skew *atomic.Int64 // added to the server's clock, ns
	rdb  *redis.Client
}

func newAuthEnv(t *testing.T, mut ...func(*app.Config)) *authEnv {
	t.Helper()
	return newAuthEnvOn(t, redistest.Shared(t).NewClient(t), mut...)
}

func newAuthEnvOn(t *testing.T, rdb *redis.Client, mut ...func(*app.Config)) *authEnv {
	t.Helper()
	skew := new(atomic.Int64)
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	cfg := app.Config{
		Redis: rdb,
		API:   true,
		Server: server.Config{
			APIKeys:   apiKeys,
			AdminKeys: map[string]string{adminKey: "ops"},
			Now:       now,
		},
		Admin: admin.Config{
			// Tests log in more than a person would.
			LoginRateLimit: server.RateLimit{Rate: 1000, Period: time.Second},
			Now:            now,
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	for _, m := range mut {
		m(&cfg)
	}
	a, apiURL := apptest.Serve(t, cfg)
	return &authEnv{t: t, url: apiURL, app: a, c: apitest.Client(t, apiURL), skew: skew, rdb: rdb}
}

// req is a request of the tests: who sends it and how.
type req struct {
	method, path string
	bearer       string // an API key, sent as Bearer
	cookie       string // the session cookie's value
	csrf         string // sent as X-CSRF-Token
	form         url.Values
	header       map[string]string
}

func (e *authEnv) do(r req) answer {
	e.t.Helper()
	var body string
	if r.form != nil {
		body = r.form.Encode()
	}
	hr, err := http.NewRequestWithContext(e.t.Context(), r.method, r.path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if r.form != nil {
		hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.cookie != "" {
		hr.AddCookie(&http.Cookie{Name: admin.SessionCookie, Value: r.cookie})
	}
	if r.csrf != "" {
		hr.Header.Set(admin.CSRFHeader, r.csrf)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	resp, err := e.c.Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return answer{resp.StatusCode, resp.Header, data}
}

// cookie returns the Set-Cookie named name of a, nil for none.
func (a answer) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// session is a logged-in browser: its session cookie and CSRF token.
type session struct{ cookie, csrf string }

// login posts the login form with key and returns the session.
func (e *authEnv) login(key string) session {
	e.t.Helper()
	a := e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {key}}})
	a.want(e.t, http.StatusSeeOther)
	s, x := a.cookie(admin.SessionCookie), a.cookie(admin.XSRFCookie)
	if s == nil || x == nil || s.Value == "" || x.Value == "" {
		e.t.Fatalf("login set no session or CSRF cookie: %v", a.header["Set-Cookie"])
	}
	return session{s.Value, x.Value}
}

// wantLoginRedirect checks a 303 to the login page that comes back to next.
func (a answer) wantLoginRedirect(t *testing.T, next string) {
	t.Helper()
	a.want(t, http.StatusSeeOther)
	want := "/admin/login?next=" + url.QueryEscape(next)
	if got := a.header.Get("Location"); got != want {
		t.Fatalf("Location %q, want %q", got, want)
	}
}

func TestAdminLoginLogout(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)

	form := e.do(req{method: "GET", path: "/admin/login?next=/admin/orders%3Fstatus%3Dfailed"})
	form.want(t, http.StatusOK)
	for _, s := range []string{`<form id="login-form" method="post" action="/admin/login">`, `<input id="key" name="key" type="password"`,
		`<button type="submit">`, `name="next" value="/admin/orders?status=failed"`} {
		if !strings.Contains(string(form.body), s) {
			t.Fatalf("the login page has no %s:\n%s", s, form.body)
		}
	}
	if got := form.header.Get("X-Frame-Options"); got != "DENY" {
		t.Fatalf("X-Frame-Options %q", got)
	}

	for _, key := range []string{"", "not-a-key-0123456789abcdef", keyA} {
		a := e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {key}, "next": {"/admin/orders"}}})
		a.want(t, http.StatusUnauthorized)
		if !strings.Contains(string(a.body), `id="login-error"`) || a.cookie(admin.SessionCookie) != nil {
			t.Fatalf("login with %q: no error shown, or a cookie set:\n%s", key, a.body)
		}
	}

	a := e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {adminKey}, "next": {"/admin/orders?status=failed"}}})
	a.want(t, http.StatusSeeOther)
	if got := a.header.Get("Location"); got != "/admin/orders?status=failed" {
		t.Fatalf("Location %q", got)
	}
	sc, xc := a.cookie(admin.SessionCookie), a.cookie(admin.XSRFCookie)
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/admin" || sc.MaxAge != 8*3600 {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/admin, Max-Age 8h", sc)
	}
	if xc == nil || xc.HttpOnly || !xc.Secure || xc.SameSite != http.SameSiteStrictMode || xc.Path != "/admin" {
		t.Fatalf("XSRF cookie %+v: want readable by scripts, Secure, SameSite=Strict, Path=/admin", xc)
	}
	s := session{sc.Value, xc.Value}

	w := e.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie})
	w.want(t, http.StatusOK)
	if who := decode[admin.Whoami](t, w.body); who.Tenant != "ops" || !who.Admin {
		t.Fatalf("whoami %+v", who)
	}
	// A live session skips the form.
	again := e.do(req{method: "GET", path: "/admin/login?next=/admin/endpoints", cookie: s.cookie})
	again.want(t, http.StatusSeeOther)
	if got := again.header.Get("Location"); got != "/admin/endpoints" {
		t.Fatalf("Location %q", got)
	}

	e.do(req{method: "POST", path: "/admin/logout", cookie: s.cookie}).wantCode(t, http.StatusForbidden, "csrf_failed")
	e.do(req{method: "POST", path: "/admin/logout", cookie: s.cookie, csrf: "x" + s.csrf}).wantCode(t, http.StatusForbidden, "csrf_failed")
	out := e.do(req{method: "POST", path: "/admin/logout", cookie: s.cookie, form: url.Values{"csrf_token": {s.csrf}}})
	out.want(t, http.StatusSeeOther)
	if got := out.header.Get("Location"); got != "/admin/login" {
		t.Fatalf("Location %q", got)
	}
	if c := out.cookie(admin.SessionCookie); c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Fatalf("logout left the session cookie: %+v", c)
	}
}

func TestAdminLoginNextStaysOnSite(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	for next, want := range map[string]string{
		"/admin/deliveries?status=failed": "/admin/deliveries?status=failed",
		"/admin/queues/":                  "/admin/queues/",
		"/admin":                          "/admin",
		"":                                "/admin/",
		"https://evil.example/admin/":     "/admin/",
		"//evil.example/admin/":           "/admin/",
		"/\\evil.example/admin/":          "/admin/",
		"/admin/../v1/orders":             "/admin/",
		"/admin/login":                    "/admin/",
		"/v1/orders":                      "/admin/",
		"javascript:alert(1)":             "/admin/",
		"/admin/%0d%0aSet-Cookie:x=y":     "/admin/%0D%0ASet-Cookie:x=y",
	} {
		a := e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {adminKey}, "next": {next}}})
		a.want(t, http.StatusSeeOther)
		if got := a.header.Get("Location"); got != want {
			t.Errorf("next %q: Location %q, want %q", next, got, want)
		}
	}
}

func TestAdminSessionRefused(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	s := e.login(adminKey)
	e.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie}).want(t, http.StatusOK)

	// Forged: another payload under the old MAC, or a changed MAC.
	parts := strings.Split(s.cookie, ".")
	forged := []string{
		parts[0] + "." + parts[1][:len(parts[1])-2] + "AA." + parts[2],
		parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])),
		"v2." + parts[1] + "." + parts[2],
		"garbage",
	}
	for _, f := range forged {
		e.do(req{method: "GET", path: "/admin/api/whoami", cookie: f}).wantCode(t, http.StatusUnauthorized, "unauthorized")
		e.do(req{method: "GET", path: "/admin/orders", cookie: f}).wantLoginRedirect(t, "/admin/orders")
	}

	// Cross-site, even with the token.
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}} {
		e.do(req{method: "POST", path: "/admin/logout", cookie: s.cookie, csrf: s.csrf, header: h}).wantCode(t, http.StatusForbidden, "csrf_failed")
	}
	e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {adminKey}}, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}).
		wantCode(t, http.StatusForbidden, "csrf_failed")

	// Expired: eight hours later.
	e.skew.Store(int64(8*time.Hour + time.Second))
	e.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie}).wantCode(t, http.StatusUnauthorized, "unauthorized")
	e.do(req{method: "GET", path: "/admin/", cookie: s.cookie}).wantLoginRedirect(t, "/admin/")
	fresh := e.login(adminKey)
	e.do(req{method: "GET", path: "/admin/api/whoami", cookie: fresh.cookie}).want(t, http.StatusOK)
	if fresh.csrf == s.csrf {
		t.Fatal("two sessions share a CSRF token")
	}
	// One session's token does not pass for another.
	e.do(req{method: "POST", path: "/admin/logout", cookie: fresh.cookie, csrf: s.csrf}).wantCode(t, http.StatusForbidden, "csrf_failed")
}

func TestAdminSessionEndsWithItsKey(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, func(c *app.Config) { c.Server.KeyCacheTTL = 50 * time.Millisecond })
	k, secret, err := e.app.Keys.Create(t.Context(), apikeys.CreateParams{Tenant: "ops", Name: "ops-laptop", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	s := e.login(secret.Reveal())
	w := decode[admin.Whoami](t, e.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie}).body)
	if w.KeyID != k.ID {
		t.Fatalf("whoami %+v, want key %s", w, k.ID)
	}
	if err := e.app.Keys.Revoke(t.Context(), k.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := e.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie})
		if a.status == http.StatusUnauthorized {
			break
		}
		a.want(t, http.StatusOK)
		if time.Now().After(deadline) {
			t.Fatal("the session of a revoked key still works after 5s")
		}
		time.Sleep(20 * time.Millisecond) // the key cache's TTL is 50ms
	}
	e.do(req{method: "GET", path: "/admin/queues", cookie: s.cookie}).wantLoginRedirect(t, "/admin/queues")
}

// TestAdminSessionSharedAcrossProcesses: two API processes without a
// configured secret share the one in Redis, so either honours the other's
// cookie; a process with another secret does not.
func TestAdminSessionSharedAcrossProcesses(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	one, two := newAuthEnvOn(t, rdb), newAuthEnvOn(t, rdb)
	s := one.login(adminKey)
	two.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie}).want(t, http.StatusOK)
	three := newAuthEnvOn(t, rdb, func(c *app.Config) { c.Admin.SessionSecret = []byte(strings.Repeat("s", 32)) })
	three.do(req{method: "GET", path: "/admin/api/whoami", cookie: s.cookie}).wantCode(t, http.StatusUnauthorized, "unauthorized")
	s3 := three.login(adminKey)
	three.do(req{method: "GET", path: "/admin/api/whoami", cookie: s3.cookie}).want(t, http.StatusOK)
}

// samplePath turns a route into a request path: parameters get dummy
// values, the queue dashboard's catch-all a documented asynqmon operation.
func samplePath(method, route string) string {
	if strings.HasSuffix(route, "/*path") {
		switch method {
		case "GET":
			return strings.TrimSuffix(route, "/*path") + "/api/queues"
		case "POST":
			return strings.TrimSuffix(route, "/*path") + "/api/queues/authtable/archived_tasks:run_all"
		case "DELETE":
			return strings.TrimSuffix(route, "/*path") + "/api/queues/authtable/archived_tasks:delete_all"
		}
	}
	return regexp.MustCompile(`:[a-z_]+`).ReplaceAllStringFunc(route, func(p string) string {
		if p == ":tenant" {
			return "tenant-a"
		}
		return "dlv_0190f1a2-7b3c-7d4e-8f90-123456789abc"
	})
}

func isAPI(path string) bool {
	return strings.HasPrefix(path, "/admin/api/") || strings.HasPrefix(path, "/admin/queues/api/")
}

// TestAdminRouteAuthorization walks every registered /admin route (but the
// login page): no credentials, a tenant key, forged and expired cookies
// are refused; an admin key and a live session pass; a change by the
// session needs its CSRF token.
func TestAdminRouteAuthorization(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t)
	// A queue for asynqmon's operations to act on.
	if _, err := asynq.NewClientFromRedisClient(e.rdb).Enqueue(asynq.NewTask("authtable", nil), asynq.Queue("authtable")); err != nil {
		t.Fatal(err)
	}
	expired := e.login(adminKey)
	e.skew.Store(int64(9 * time.Hour))
	live := e.login(adminKey)
	forged := live.cookie[:len(live.cookie)-4] + "AAAA"

	seen := map[string]bool{}
	for _, r := range e.app.API.Routes() {
		if !strings.HasPrefix(r.Path, "/admin") || r.Path == "/admin/login" {
			continue
		}
		path := samplePath(r.Method, r.Path)
		seen[r.Method+" "+r.Path] = true
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			refused := func(a answer) {
				t.Helper()
				switch {
				case isAPI(path):
					a.wantCode(t, http.StatusUnauthorized, "unauthorized")
				case r.Method == "GET":
					a.wantLoginRedirect(t, path)
				default:
					a.wantLoginRedirect(t, "/admin/")
				}
			}
			refused(e.do(req{method: r.Method, path: path}))
			refused(e.do(req{method: r.Method, path: path, cookie: forged, csrf: live.csrf}))
			refused(e.do(req{method: r.Method, path: path, cookie: expired.cookie, csrf: expired.csrf}))
			e.do(req{method: r.Method, path: path, bearer: "not-a-key-0123456789abcdef"}).wantCode(t, http.StatusUnauthorized, "unauthorized")
			e.do(req{method: r.Method, path: path, bearer: keyA}).wantCode(t, http.StatusForbidden, "forbidden")

			passes := func(a answer, who string) {
				t.Helper()
				if a.status == http.StatusUnauthorized || a.status == http.StatusForbidden ||
					strings.HasPrefix(a.header.Get("Location"), "/admin/login") && r.Path != "/admin/logout" {
					t.Fatalf("%s: %d %s (Location %q), want the route's own answer", who, a.status, a.body, a.header.Get("Location"))
				}
			}
			passes(e.do(req{method: r.Method, path: path, bearer: adminKey}), "admin key")
			if r.Method == "GET" {
				passes(e.do(req{method: r.Method, path: path, cookie: live.cookie}), "session")
				return
			}
			e.do(req{method: r.Method, path: path, cookie: live.cookie}).wantCode(t, http.StatusForbidden, "csrf_failed")
			e.do(req{method: r.Method, path: path, cookie: live.cookie, form: url.Values{"csrf_token": {"wrong"}}}).wantCode(t, http.StatusForbidden, "csrf_failed")
			if r.Method == "POST" { // forms are POSTs; Go reads no form from a DELETE
				passes(e.do(req{method: r.Method, path: path, cookie: live.cookie, form: url.Values{"csrf_token": {live.csrf}}}), "session with the form's token")
			}
			passes(e.do(req{method: r.Method, path: path, cookie: live.cookie, csrf: live.csrf}), "session with the token header")
			passes(e.do(req{method: r.Method, path: path, cookie: live.cookie, header: map[string]string{"X-XSRF-TOKEN": live.csrf}}), "session with asynqmon's header")
		})
	}
	for _, must := range []string{"POST /admin/logout", "GET /admin/queues", "GET /admin/queues/*path", "POST /admin/queues/*path", "GET /admin/api/whoami"} {
		if !seen[must] {
			t.Errorf("route %s is not registered", must)
		}
	}
}

func TestAdminLoginIsRateLimited(t *testing.T) {
	t.Parallel()
	e := newAuthEnv(t, func(c *app.Config) { c.Admin.LoginRateLimit = server.RateLimit{Rate: 3, Period: time.Minute} })
	for i := range 3 {
		e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {"guess-" + strconv.Itoa(i) + "-0123456789abcdef"}}}).want(t, http.StatusUnauthorized)
	}
	a := e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {adminKey}}})
	a.wantCode(t, http.StatusTooManyRequests, "rate_limited")
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
	}
	// Not X-Forwarded-For: any client can send it.
	e.do(req{method: "POST", path: "/admin/login", form: url.Values{"key": {adminKey}}, header: map[string]string{"X-Forwarded-For": "203.0.113.9"}}).
		wantCode(t, http.StatusTooManyRequests, "rate_limited")
}

func TestAdminSessionConfig(t *testing.T) {
	t.Parallel()
	rdb := redistest.Shared(t).NewClient(t)
	for _, cfg := range []admin.Config{
		{SessionSecret: []byte("too short")},
		{SessionTTL: time.Second},
	} {
		if _, err := admin.New(cfg, admin.Deps{Orders: orders.NewStore(rdb, orders.StoreConfig{})}); err == nil || !strings.Contains(err.Error(), "admin: the session") {
			t.Errorf("admin.New(%+v) = %v, want a session error", cfg, err)
		}
	}
}
