package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/asyncgate/asyncgate/internal/redistest"
	"github.com/asyncgate/asyncgate/orders"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// The API keys of the load: one tenant for the measured orders, one for the
// warm-up, so that the figures count measured orders only.
const (
	apiKey     = "load-key-0123456789abcdef"
	tenant     = "load"
	warmKey    = "warm-key-0123456789abcdef"
	warmTenant = "warm"
)

func apiKeys() map[string]string { return map[string]string{apiKey: tenant, warmKey: warmTenant} }

// orderBody is the order every client of the accept scenarios posts.
var orderBody = []byte(`{"account_id":"acc-1","symbol":"ACME","side":"buy","quantity":1,"type":"market"}`)

// orderBodyFor is an order of account acc-<client>-<seq/1000>: the simulator
// keeps reservations of executed orders, so one account would run out of
// funds (1,000,000 at 100 a share) after 10,000 orders.
func orderBodyFor(client, seq int) []byte {
	return fmt.Appendf(nil, `{"account_id":"acc-%d-%d","symbol":"ACME","side":"buy","quantity":1,"type":"market"}`, client, seq/1000)
}

// newHTTPClient is a client tuned for many concurrent requests to one host.
func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        2 * conns,
			MaxIdleConnsPerHost: 2 * conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
}

// newGinNoop is the baseline: a gin engine in release mode whose one
// handler binds the body to an order request (gin's JSON binding) and
// answers 202 {}.
func newGinNoop() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.POST("/v1/orders", func(c *gin.Context) {
		var req orders.Request
		if err := c.ShouldBindJSON(&req); err != nil {
			c.Status(http.StatusBadRequest)
			return
		}
		c.Data(http.StatusAccepted, "application/json", []byte("{}"))
	})
	return r
}

// poster posts orders to an API.
type poster struct {
	c   *http.Client
	url string // of POST /v1/orders
}

// post places one order and returns its id (from Location). Any answer but
// 202 is an error.
func (p poster) post(ctx context.Context, key string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := p.c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("POST %s: %s: %s", p.url, resp.Status, b)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	return strings.TrimPrefix(resp.Header.Get("Location"), "/v1/orders/"), nil
}
