package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path"
	"regexp"
	"strings"

	"github.com/gin-gonic/gin"
)

// QueuesRoot is where Deps.QueuesUI is mounted.
const QueuesRoot = "/admin/queues"

// adminQueueRoutes mounts the queue dashboard (asynqmon, built by the
// caller: this package knows nothing of Asynq) at /admin/queues, behind the
// group's authentication and CSRF check. asynqmon routes by the whole
// path, so it gets the request as it came.
func (a *Dashboard) adminQueueRoutes(g *gin.RouterGroup) {
	if a.deps.QueuesUI == nil {
		return
	}
	ui := a.deps.QueuesUI
	h := func(c *gin.Context) {
		p := c.Request.URL.Path
		switch {
		case strings.HasPrefix(p, QueuesRoot+"/api/"):
			ui.ServeHTTP(&jsonDefault{ResponseWriter: c.Writer}, c.Request)
		case c.Request.Method == http.MethodGet && !strings.Contains(path.Base(p), "."):
			serveQueuesPage(c, ui) // the page itself, at any of its routes
		default: // its scripts, icons and manifest
			ui.ServeHTTP(c.Writer, c.Request)
		}
	}
	g.GET("/queues", h)
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		g.Handle(m, "/queues/*path", h)
	}
}

// externalLink matches a <link> to another site: asynqmon's page loads
// its fonts from fonts.googleapis.com.
var externalLink = regexp.MustCompile(`<link[^>]*\shref="(?:https?:)?//[^"]*"[^>]*>`)

// inlineScript matches the page's inline scripts (not those with a src).
var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// backLink leads from asynqmon's page back to the dashboard's own.
const backLink = `<a id="asyncgate-back" href="/admin/" style="position:fixed;right:1rem;bottom:1rem;z-index:2000;` +
	`background:#1d2330;color:#fff;padding:.4rem .8rem;border-radius:.3rem;font:14px system-ui,sans-serif;text-decoration:none">` +
	`&larr; asyncgate admin</a>`

// serveQueuesPage serves asynqmon's page so that it works offline and
// requests nothing from elsewhere: without the links to Google Fonts (the
// page falls back to the system's sans-serif; it uses no icon font), with
// a link back to the dashboard, under a Content-Security-Policy that lets
// it load only from this site and run only its own scripts.
func serveQueuesPage(c *gin.Context, ui http.Handler) {
	rec := &bufferedAnswer{header: http.Header{}, code: http.StatusOK}
	ui.ServeHTTP(rec, c.Request)
	body := rec.body.Bytes()
	if rec.code != http.StatusOK || !bytes.HasPrefix(bytes.ToLower(body), []byte("<!doctype html")) {
		maps.Copy(c.Writer.Header(), rec.header)
		c.Data(rec.code, rec.header.Get("Content-Type"), body)
		return
	}
	body = externalLink.ReplaceAll(body, nil)
	body = bytes.Replace(body, []byte("<body>"), []byte("<body>"+backLink), 1)
	scripts := []string{"'self'"}
	for _, m := range inlineScript.FindAllSubmatch(body, -1) {
		sum := sha256.Sum256(m[1])
		scripts = append(scripts, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
	}
	c.Header("Content-Security-Policy", "default-src 'self'; script-src "+strings.Join(scripts, " ")+
		"; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "+
		"object-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Data(http.StatusOK, "text/html; charset=utf-8", body)
}

// bufferedAnswer keeps an answer to edit it before it is sent.
type bufferedAnswer struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (b *bufferedAnswer) Header() http.Header         { return b.header }
func (b *bufferedAnswer) WriteHeader(code int)        { b.code = code }
func (b *bufferedAnswer) Write(p []byte) (int, error) { return b.body.Write(p) }

// jsonDefault labels as JSON the successful answers of asynqmon's API,
// which it sends without a Content-Type (its errors are text/plain).
type jsonDefault struct {
	http.ResponseWriter
	wrote bool
}

func (w *jsonDefault) WriteHeader(code int) {
	if h := w.Header(); !w.wrote && h.Get("Content-Type") == "" && code < 300 && code != http.StatusNoContent {
		h.Set("Content-Type", "application/json")
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *jsonDefault) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Redacted replaces the value of a field that RedactPayload hides.
const Redacted = "[redacted]"

// sensitiveNames are the parts of a field name (lower case, without "_"
// and "-") whose value RedactPayload hides.
var sensitiveNames = []string{
	"secret", "key", "token", "signature", "password", "passwd", "passphrase", "authorization",
	"auth", "cookie", "credential", "session", "private", "account", "metadata", "email", "phone",
	"card", "iban", "ssn", "address", "callback", "url",
}

func sensitive(name string) bool {
	n := strings.ToLower(strings.NewReplacer("_", "", "-", "", ".", "", " ", "").Replace(name))
	for _, s := range sensitiveNames {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// RedactPayload is the queue dashboard's view of a task payload or result:
// the JSON with the value of every field whose name looks secret or
// personal (key, token, secret, signature, account, metadata, e-mail,
// URL…) replaced by "[redacted]", at any depth. A payload that is not JSON
// is not shown at all. taskType is unused: every task is treated alike.
func RedactPayload(taskType string, payload []byte) string {
	if len(bytes.TrimSpace(payload)) == 0 {
		return ""
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return fmt.Sprintf("(%d bytes, not JSON: hidden)", len(payload))
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Sprintf("(%d bytes, not JSON: hidden)", len(payload))
	}
	out, err := json.Marshal(redact(v))
	if err != nil {
		return fmt.Sprintf("(%d bytes: hidden)", len(payload))
	}
	return string(out)
}

func redact(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if sensitive(k) {
				x[k] = Redacted
			} else {
				x[k] = redact(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = redact(e)
		}
	}
	return v
}
