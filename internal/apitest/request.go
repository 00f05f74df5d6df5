package apitest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// ReqOption changes a request before [Do] sends it.
type ReqOption func(*http.Request) *http.Request

// Do sends a request to the API at baseURL with the API key key ("" for
// none) and, when body is not empty, Content-Type: application/json. It
// returns the response and its body, read whole. The response is validated
// against openapi.yaml by a [Client] of t's own, so that a mismatch fails
// the (sub)test that caused it; a request that cannot be sent fails t.
func Do(t testing.TB, baseURL, method, path, key, body string, opts ...ReqOption) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, path, r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		req = o(req)
	}
	resp, err := Client(t, baseURL).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, got
}

// Decode unmarshals body into a T, failing t (with the body) if it cannot.
func Decode[T any](t testing.TB, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, body)
	}
	return v
}

// WantStatus fails t at once, naming the request and showing the body,
// unless the response has status.
func WantStatus(t testing.TB, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body: %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
}
