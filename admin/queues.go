package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
		w := http.ResponseWriter(c.Writer)
		if strings.HasPrefix(c.Request.URL.Path, QueuesRoot+"/api/") {
			w = &jsonDefault{ResponseWriter: w}
		}
		ui.ServeHTTP(w, c.Request)
	}
	g.GET("/queues", h)
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		g.Handle(m, "/queues/*path", h)
	}
}

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
