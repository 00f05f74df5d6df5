package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/asyncgate/asyncgate/internal/apitest"
	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/sim"
	"github.com/asyncgate/asyncgate/server"
)

// TestPortfolioRead reads GET /v1/portfolios/{account_id} over HTTP, every answer checked
// against openapi.yaml: fresh, stale while the portfolio service is down (and once its
// breaker is open, without calling it), 503 with nothing known, per tenant, and fresh
// again once the service is back.
func TestPortfolioRead(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) {
		c.Worker = false
		c.Portfolio.Breaker.MinRequests = 2
		c.Portfolio.Breaker.OpenTimeout = 500 * time.Millisecond
	})
	client := apitest.Client(t, b.url)
	get := func(key, path string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, body
	}
	read := func(key, account string) (int, server.Portfolio, http.Header) {
		t.Helper()
		code, h, body := get(key, "/v1/portfolios/"+account)
		var p server.Portfolio
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatalf("portfolio %s: %v", body, err)
			}
		}
		return code, p, h
	}
	other := "other-key-0123456789abcdef"
	b.sim.SetBalance("acc-1", 5000)

	code, fresh, _ := read(apiKey, "acc-1")
	if code != http.StatusOK || fresh.Stale || fresh.AccountID != "acc-1" || fresh.Cash != 5000 || fresh.Available != 5000 || fresh.AsOf.IsZero() {
		t.Fatalf("fresh read: %d %+v", code, fresh)
	}

	// The portfolio service goes down: the last view, marked stale.
	b.sim.SetFaults(sim.Portfolio, sim.Faults{Outage: sim.Outage503})
	for i := range 3 {
		code, stale, _ := read(apiKey, "acc-1")
		want := fresh
		want.Stale = true
		if code != http.StatusOK || stale != want {
			t.Fatalf("read %d during the outage: %d %+v, want %+v", i, code, stale, want)
		}
	}
	// One failure of two calls (the 50% ratio, 2 calls minimum) opened the breaker: the
	// other reads did not call the service.
	if got := b.sim.Stats().PortfolioRequests; got != 2 {
		t.Errorf("PortfolioRequests = %d, want 2 (one fresh, one failed)", got)
	}
	var ready struct {
		Breakers map[string]server.BreakerState `json:"breakers"`
	}
	code, _, body := get("", "/readyz")
	if err := json.Unmarshal(body, &ready); err != nil || code != http.StatusOK {
		t.Fatalf("readyz: %d %s", code, body)
	}
	if st := ready.Breakers["portfolio"]; st.State != "open" || st.OpenUntil == nil {
		t.Errorf("readyz breakers = %+v, want portfolio open with open_until", ready.Breakers)
	}

	// Nothing known: 503 with Retry-After, for an account never read and for another
	// tenant's read of the same account (views are per tenant).
	for _, c := range []struct{ key, account string }{{apiKey, "acc-2"}, {other, "acc-1"}} {
		code, h, body := get(c.key, "/v1/portfolios/"+c.account)
		var p server.Problem
		json.Unmarshal(body, &p)
		if code != http.StatusServiceUnavailable || p.Code != "portfolio_unavailable" {
			t.Errorf("%s read by %s: %d %s, want a 503 portfolio_unavailable", c.account, c.key[:5], code, body)
		}
		if s, err := strconv.Atoi(h.Get("Retry-After")); err != nil || s != 1 {
			t.Errorf("Retry-After = %q, want the breaker's remaining open time, 1s", h.Get("Retry-After"))
		}
	}

	if code, _, _ := get(apiKey, "/v1/portfolios/bad%20id"); code != http.StatusUnprocessableEntity {
		t.Errorf("bad account id: %d, want 422", code)
	}
	if code, _, _ := get("", "/v1/portfolios/acc-1"); code != http.StatusUnauthorized {
		t.Errorf("no key: %d, want 401", code)
	}

	// Back: a probe goes through once the breaker's open time is over.
	b.sim.ClearFaults()
	b.sim.SetBalance("acc-1", 7000)
	pollUntil(t, 10*time.Second, "a fresh read after the outage", func() bool {
		code, p, _ := read(apiKey, "acc-1")
		return code == http.StatusOK && !p.Stale && p.Cash == 7000
	})
}

// TestPortfolioReadNotConfigured: an API without a portfolio URL answers 503.
func TestPortfolioReadNotConfigured(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *app.Config) {
		c.Worker = false
		c.Portfolio.BaseURL = ""
	})
	r := b.do(t, "GET", "/v1/portfolios/acc-1", apiKey, nil)
	equal(t, "status", r.status, http.StatusServiceUnavailable)
	equal(t, "content type", r.header.Get("Content-Type"), "application/problem+json")
}
