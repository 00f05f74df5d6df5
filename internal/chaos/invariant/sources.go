package invariant

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// HTTPAPI reads orders from the gateway's public API.
type HTTPAPI struct {
	BaseURL string            // such as http://127.0.0.1:8080
	Keys    map[string]string // API key by tenant
	Client  *http.Client
}

// Order implements [API].
func (a *HTTPAPI) Order(ctx context.Context, tenant, id string) (*Order, error) {
	key, ok := a.Keys[tenant]
	if !ok {
		return nil, fmt.Errorf("no API key for tenant %q", tenant)
	}
	var o Order
	if err := getJSON(ctx, a.Client, a.BaseURL+"/v1/orders/"+url.PathEscape(id), key, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// List implements [Lister], page by page through GET /v1/orders.
func (a *HTTPAPI) List(ctx context.Context, tenant string) ([]Listed, error) {
	key, ok := a.Keys[tenant]
	if !ok {
		return nil, fmt.Errorf("no API key for tenant %q", tenant)
	}
	var out []Listed
	for cursor := ""; ; {
		var page struct {
			Data []struct {
				ID       string            `json:"id"`
				Status   string            `json:"status"`
				Metadata map[string]string `json:"metadata"`
			} `json:"data"`
			NextCursor string `json:"next_cursor"`
		}
		u := a.BaseURL + "/v1/orders?limit=100"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		if err := getJSON(ctx, a.Client, u, key, &page); err != nil {
			return nil, err
		}
		for _, o := range page.Data {
			out = append(out, Listed{ID: o.ID, Status: o.Status, Intent: o.Metadata["intent"]})
		}
		if page.NextCursor == "" || len(page.Data) == 0 {
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// HTTPLedger reads the simulator's ledger.
type HTTPLedger struct {
	BaseURL string // the simulator's, such as http://127.0.0.1:9090
	Client  *http.Client
}

// Order implements [Ledger].
func (l *HTTPLedger) Order(ctx context.Context, id string) (*LedgerEntry, error) {
	var e LedgerEntry
	if err := getJSON(ctx, l.Client, l.BaseURL+"/_sim/orders/"+url.PathEscape(id), "", &e); err != nil {
		return nil, err
	}
	return &e, nil
}

func getJSON(ctx context.Context, c *http.Client, u, key string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
		return json.NewDecoder(res.Body).Decode(v)
	case http.StatusNotFound:
		io.Copy(io.Discard, res.Body)
		return ErrNotFound
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
	return fmt.Errorf("GET %s: %s: %s", u, res.Status, b)
}

// LogFile is a receiver's log: one JSON [Delivery] a line.
type LogFile string

// Deliveries implements [Receiver]. A last line cut short (being written) is left out.
func (f LogFile) Deliveries() ([]Delivery, error) {
	fh, err := os.Open(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []Delivery
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var d Delivery
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			continue
		}
		out = append(out, d)
	}
	return out, sc.Err()
}
