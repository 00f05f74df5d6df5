package admin

// Authentication of the /admin routes: an admin key as a Bearer token (API
// clients), or a session cookie issued by the login form (browsers), with
// CSRF protection for the cookie.
//
// The session cookie is stateless: "v1.<payload>.<mac>", the payload a
// base64url JSON object {sid, kid, kh, iat, exp} and mac its HMAC-SHA256
// under a key derived from the server secret (Config.SessionSecret, or
// one shared by every API process through Redis, see sessionKeys). kh is
// the admin key's SHA-256, masked with HMAC(secret, sid) so that the
// cookie does not carry an offline-guessable hash of a configured key; on
// every request the key is looked up again (through the key cache), so a
// revoked key ends its sessions within server.Config.KeyCacheTTL.
//
// CSRF: a state-changing request authenticated by the cookie must carry
// the session's token (HMAC(secret, sid)) in the form field csrf_token or
// the header X-CSRF-Token or X-XSRF-TOKEN; the cookie XSRF-TOKEN holds it
// for asynqmon's UI, whose HTTP client (axios) copies it into X-XSRF-TOKEN
// on same-origin requests. Besides, the cookie is SameSite=Strict and
// cross-origin requests (Sec-Fetch-Site, Origin) are refused. A Bearer key
// is no ambient credential: it needs no token.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/go-redis/redis_rate/v10"

	"github.com/asyncgate/asyncgate/apikeys"
	"github.com/asyncgate/asyncgate/server"
)

const (
	// SessionCookie is the name of the dashboard's session cookie.
	SessionCookie = "ag_admin_session"
	// XSRFCookie holds the session's CSRF token for scripts of the
	// dashboard (asynqmon's axios sends it back as X-XSRF-TOKEN).
	XSRFCookie = "XSRF-TOKEN"
	// CSRFField and CSRFHeader carry the CSRF token of a state-changing
	// request authenticated by the session cookie.
	CSRFField  = "csrf_token"
	CSRFHeader = "X-CSRF-Token"

	xsrfHeader  = "X-XSRF-TOKEN"
	adminPath   = "/admin"
	loginPath   = "/admin/login"
	ctxSession  = "admin_session"
	sessionVer  = "v1"
	minSecret   = 32
	loginBody   = 4 << 10
	secretRedis = "ag:admin:session-secret"
)

// session is the payload of the session cookie.
type session struct {
	ID       string `json:"sid"` // random, 128 bits, base64url
	KeyID    string `json:"kid"`
	KeyHash  string `json:"kh"` // the key's SHA-256 XOR HMAC(mask key, sid), base64url
	IssuedAt int64  `json:"iat"`
	Expires  int64  `json:"exp"`
}

// sessionKeys are derived from the server secret, one per use.
type sessionKeys struct{ mac, mask, csrf []byte }

func deriveKeys(secret []byte) *sessionKeys {
	d := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("asyncgate admin session " + label))
		return m.Sum(nil)
	}
	return &sessionKeys{mac: d("mac"), mask: d("mask"), csrf: d("csrf")}
}

// adminAuth is the state of admin authentication.
type adminAuth struct {
	mu   sync.Mutex
	keys *sessionKeys // nil until the secret is known
	cop  *http.CrossOriginProtection
}

func newAdminAuth(cfg Config) *adminAuth {
	a := &adminAuth{cop: http.NewCrossOriginProtection()}
	if len(cfg.SessionSecret) > 0 {
		a.keys = deriveKeys(cfg.SessionSecret)
	}
	return a
}

// sessionKeys returns the keys of the session cookies. Without a
// configured secret, the first API process to need one stores 32 random
// bytes in Redis (SET NX), and every process uses what Redis holds, so a
// cookie issued by one works on all. Without Redis, the secret is random
// per process (sessions end with the process).
func (a *Dashboard) sessionKeys(ctx context.Context) (*sessionKeys, error) {
	st := a.adminAuth
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.keys != nil {
		return st.keys, nil
	}
	secret := make([]byte, minSecret)
	rand.Read(secret)
	if rdb := a.deps.Redis; rdb != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := rdb.SetNX(ctx, secretRedis, secret, 0).Err(); err != nil {
			return nil, fmt.Errorf("admin session secret: %w", err)
		}
		got, err := rdb.Get(ctx, secretRedis).Bytes()
		if err != nil {
			return nil, fmt.Errorf("admin session secret: %w", err)
		}
		if len(got) < minSecret {
			return nil, fmt.Errorf("admin session secret: %s holds %d bytes, want %d or more", secretRedis, len(got), minSecret)
		}
		secret = got
	}
	st.keys = deriveKeys(secret)
	return st.keys, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func maskHash(k *sessionKeys, sid string, h []byte) []byte {
	m := mac(k.mask, sid)
	out := make([]byte, len(h))
	subtle.XORBytes(out, h, m)
	return out
}

// encodeSession returns the cookie value of sess.
func encodeSession(k *sessionKeys, sess session) string {
	j, _ := json.Marshal(sess)
	body := sessionVer + "." + b64(j)
	return body + "." + b64(mac(k.mac, body))
}

// decodeSession checks the cookie value's MAC and expiry; ok is false for
// anything else than a valid, unexpired session.
func decodeSession(k *sessionKeys, v string, now time.Time) (sess session, hash [sha256.Size]byte, ok bool) {
	i := strings.LastIndexByte(v, '.')
	if i < 0 || !strings.HasPrefix(v, sessionVer+".") {
		return sess, hash, false
	}
	sig, err := base64.RawURLEncoding.DecodeString(v[i+1:])
	if err != nil || !hmac.Equal(sig, mac(k.mac, v[:i])) {
		return sess, hash, false
	}
	j, err := base64.RawURLEncoding.DecodeString(v[len(sessionVer)+1 : i])
	if err != nil || json.Unmarshal(j, &sess) != nil {
		return sess, hash, false
	}
	masked, err := base64.RawURLEncoding.DecodeString(sess.KeyHash)
	if err != nil || len(masked) != sha256.Size || sess.ID == "" {
		return sess, hash, false
	}
	t := now.Unix()
	if t >= sess.Expires || sess.IssuedAt > t+60 {
		return sess, hash, false
	}
	copy(hash[:], maskHash(k, sess.ID, masked))
	return sess, hash, true
}

// csrfFor returns the CSRF token of a session.
func csrfFor(k *sessionKeys, sid string) string { return b64(mac(k.csrf, sid)) }

// adminSession is what the middleware keeps of a cookie-authenticated
// request.
type adminSession struct{ csrf string }

// csrfToken returns the CSRF token a page must send back with a
// state-changing request (form field "csrf_token" or header
// "X-CSRF-Token"); "" when the request is not authenticated by the session
// cookie (a Bearer key needs none).
func (a *Dashboard) csrfToken(c *gin.Context) string {
	if v, ok := c.Get(ctxSession); ok {
		return v.(*adminSession).csrf
	}
	return ""
}

// isAdminAPI reports whether path is one of the JSON APIs under /admin,
// which answer 401 problems rather than sending browsers to the login page.
func isAdminAPI(p string) bool {
	return p == "/admin/api" || strings.HasPrefix(p, "/admin/api/") ||
		p == "/admin/queues/api" || strings.HasPrefix(p, "/admin/queues/api/")
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// adminHeaders are set on every /admin answer: no framing, no caching,
// no admin URLs in other sites' Referer.
func adminHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
}

// requireAdminAuth is the middleware of the /admin group (but the login
// page): a Bearer admin key, or a valid session cookie of an admin key
// still valid, with a CSRF token on state-changing requests.
func (a *Dashboard) requireAdminAuth(c *gin.Context) {
	adminHeaders(c)
	if c.GetHeader("Authorization") != "" {
		a.adminBearer(c)
		return
	}
	p, sess, err := a.cookiePrincipal(c)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	if p == nil {
		a.noCredentials(c)
		return
	}
	server.SetCaller(c, p)
	c.Set(ctxSession, sess)
	if !safeMethod(c.Request.Method) {
		if err := a.checkCSRF(c, sess.csrf); err != nil {
			server.WriteProblem(c, err)
			return
		}
	} else if ck, err := c.Request.Cookie(XSRFCookie); err != nil || ck.Value != sess.csrf {
		a.setCookie(c, XSRFCookie, sess.csrf, int(a.cfg.SessionTTL/time.Second), false)
	}
	c.Next()
}

// adminBearer authenticates "Authorization: Bearer <admin key>".
func (a *Dashboard) adminBearer(c *gin.Context) {
	p := a.api.Bearer(c, "send an admin key as 'Authorization: Bearer <key>', or log in at /admin/login")
	if p == nil {
		return
	}
	if !p.Admin {
		server.WriteProblem(c, server.NewProblem("forbidden", "this route needs an admin key"))
		return
	}
	c.Next()
}

// cookiePrincipal returns the admin principal of the request's session
// cookie; nil when there is no cookie, or a forged, expired or revoked one.
func (a *Dashboard) cookiePrincipal(c *gin.Context) (*server.Caller, *adminSession, error) {
	ck, err := c.Request.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil, nil
	}
	k, err := a.sessionKeys(c.Request.Context())
	if err != nil {
		return nil, nil, err
	}
	sess, hash, ok := decodeSession(k, ck.Value, a.cfg.Now())
	if !ok {
		return nil, nil, nil
	}
	p, err := a.api.KeyCaller(c.Request.Context(), hash)
	if err != nil || p == nil || !p.Admin || p.KeyID != sess.KeyID {
		return nil, nil, err
	}
	return p, &adminSession{csrf: csrfFor(k, sess.ID)}, nil
}

// checkCSRF refuses a cross-origin request, and one without the session's
// token.
func (a *Dashboard) checkCSRF(c *gin.Context, want string) error {
	if err := a.adminAuth.cop.Check(c.Request); err != nil {
		return server.NewProblem("csrf_failed", "cross-origin requests are refused")
	}
	got := c.GetHeader(CSRFHeader)
	if got == "" {
		got = c.GetHeader(xsrfHeader)
	}
	if got == "" && isForm(c.Request) {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, a.cfg.MaxBodyBytes)
		got = c.PostForm(CSRFField)
	}
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		return server.NewProblem("csrf_failed", "the CSRF token is missing or wrong: reload the page and try again")
	}
	return nil
}

func isForm(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// noCredentials answers a request without valid credentials: a 401
// problem for the JSON APIs, else a redirect to the login page that comes
// back here.
func (a *Dashboard) noCredentials(c *gin.Context) {
	if isAdminAPI(c.Request.URL.Path) {
		c.Header("WWW-Authenticate", `Bearer realm="asyncgate"`)
		server.WriteProblem(c, server.NewProblem("unauthorized", "send an admin key as 'Authorization: Bearer <key>', or log in at /admin/login"))
		return
	}
	next := "/admin/"
	if c.Request.Method == http.MethodGet || c.Request.Method == http.MethodHead {
		next = c.Request.URL.RequestURI()
	}
	if _, err := c.Request.Cookie(SessionCookie); err == nil {
		a.clearCookies(c) // forged, expired or revoked
	}
	c.Redirect(http.StatusSeeOther, loginPath+"?next="+url.QueryEscape(safeNext(next)))
	c.Abort()
}

// safeNext returns next when it is a path under /admin on this site (not
// the login page), else /admin/: the login page redirects nowhere else.
func safeNext(next string) string {
	const def = "/admin/"
	if next == "" || len(next) > 2048 || strings.ContainsAny(next, "\\\x00\r\n\t") || strings.HasPrefix(next, "//") {
		return def
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return def
	}
	clean := path.Clean(u.Path)
	if clean != adminPath && !strings.HasPrefix(clean, adminPath+"/") || clean == loginPath {
		return def
	}
	if strings.HasSuffix(u.Path, "/") && clean != "/" {
		clean += "/"
	}
	out := &url.URL{Path: clean, RawQuery: u.RawQuery}
	return out.RequestURI()
}

func (a *Dashboard) setCookie(c *gin.Context, name, value string, maxAge int, httpOnly bool) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: name, Value: value, Path: adminPath, MaxAge: maxAge,
		HttpOnly: httpOnly, Secure: !a.cfg.InsecureCookies, SameSite: http.SameSiteStrictMode,
	})
}

func (a *Dashboard) clearCookies(c *gin.Context) {
	a.setCookie(c, SessionCookie, "", -1, true)
	a.setCookie(c, XSRFCookie, "", -1, false)
}

//go:embed login.html.tmpl
var loginHTML string

var loginTmpl = template.Must(template.New("login").Parse(loginHTML))

type loginPage struct {
	Next  string
	Error string
}

func (a *Dashboard) renderLogin(c *gin.Context, status int, page loginPage) {
	adminHeaders(c)
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	var b strings.Builder
	if err := loginTmpl.Execute(&b, page); err != nil {
		server.WriteProblem(c, err)
		return
	}
	c.Data(status, "text/html; charset=utf-8", []byte(b.String()))
}

// loginForm is GET /admin/login: the form, or straight on when the
// browser has a valid session already.
func (a *Dashboard) loginForm(c *gin.Context) {
	next := safeNext(c.Query("next"))
	p, _, err := a.cookiePrincipal(c)
	if err != nil {
		server.WriteProblem(c, err)
		return
	}
	if p != nil {
		adminHeaders(c)
		c.Redirect(http.StatusSeeOther, next)
		return
	}
	a.renderLogin(c, http.StatusOK, loginPage{Next: next})
}

// login is POST /admin/login: checks the admin key of the form and starts
// a session.
func (a *Dashboard) login(c *gin.Context) {
	if err := a.adminAuth.cop.Check(c.Request); err != nil {
		adminHeaders(c)
		server.WriteProblem(c, server.NewProblem("csrf_failed", "cross-origin requests are refused"))
		return
	}
	if err := a.limitLogin(c); err != nil {
		adminHeaders(c)
		server.WriteProblem(c, err)
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, loginBody)
	key, next := c.PostForm("key"), safeNext(c.PostForm("next"))
	if key == "" {
		a.renderLogin(c, http.StatusUnauthorized, loginPage{Next: next, Error: "Enter an admin key."})
		return
	}
	p, err := a.api.KeyCaller(c.Request.Context(), apikeys.Hash(key))
	if err != nil {
		adminHeaders(c)
		server.WriteProblem(c, err)
		return
	}
	if p == nil || !p.Admin {
		a.log.WarnContext(c, "admin login refused", "remote", c.RemoteIP(), "known_key", p != nil, "request_id", server.RequestID(c))
		a.renderLogin(c, http.StatusUnauthorized, loginPage{Next: next, Error: "That is not a valid admin key."})
		return
	}
	k, err := a.sessionKeys(c.Request.Context())
	if err != nil {
		adminHeaders(c)
		server.WriteProblem(c, err)
		return
	}
	now := a.cfg.Now()
	var sid [16]byte
	rand.Read(sid[:])
	hash := apikeys.Hash(key)
	sess := session{ID: b64(sid[:]), KeyID: p.KeyID, IssuedAt: now.Unix(), Expires: now.Add(a.cfg.SessionTTL).Unix()}
	sess.KeyHash = b64(maskHash(k, sess.ID, hash[:]))
	maxAge := int(a.cfg.SessionTTL / time.Second)
	adminHeaders(c)
	a.setCookie(c, SessionCookie, encodeSession(k, sess), maxAge, true)
	a.setCookie(c, XSRFCookie, csrfFor(k, sess.ID), maxAge, false)
	a.log.InfoContext(c, "admin login", "key_id", p.KeyID, "tenant", p.Tenant, "remote", c.RemoteIP(), "request_id", server.RequestID(c))
	c.Redirect(http.StatusSeeOther, next)
}

// limitLogin allows Config.LoginRateLimit attempts per client
// address, across processes (with Redis).
func (a *Dashboard) limitLogin(c *gin.Context) error {
	rdb := a.deps.Redis
	if rdb == nil {
		return nil
	}
	res, err := redis_rate.NewLimiter(rdb).Allow(c.Request.Context(), "ag:admin:login:"+clientBucket(c.RemoteIP()), a.loginLimit)
	if err != nil {
		return fmt.Errorf("login rate limit: %w", err)
	}
	if res.Allowed == 0 {
		c.Header("Retry-After", fmt.Sprint(max(1, int((res.RetryAfter+time.Second-1)/time.Second))))
		return server.NewProblem("rate_limited", "too many login attempts from your address; wait a minute")
	}
	return nil
}

// clientBucket is what login attempts are counted by: the peer's IPv4
// address, or its IPv6 /64 (one host usually has a whole one). Not
// X-Forwarded-For, which any client can send: behind a proxy, every login
// shares the proxy's bucket.
func clientBucket(ip string) string {
	a := net.ParseIP(ip)
	switch {
	case a == nil:
		return "unknown"
	case a.To4() != nil:
		return a.String()
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// logout is POST /admin/logout: the session cookie is dropped. The cookie
// is stateless, so a copy taken before stays valid until it expires or its
// key is revoked.
func (a *Dashboard) logout(c *gin.Context) {
	a.clearCookies(c)
	c.Redirect(http.StatusSeeOther, loginPath)
}
