// Package apitest holds the HTTP API to its contract in tests: every
// response a test receives through [Transport] or [Client] is validated
// against openapi.yaml, and a response the document does not allow (an
// undocumented status, a missing header, a field too many, a wrong content
// type) fails the test that received it.
//
// # Routes the document does not have
//
// A request to a path or method that openapi.yaml does not list fails the
// test too: either the route is missing from the document, or the test
// meant to miss. A test that means to miss marks its request with
// [ExpectUnknownRoute]. The answer must then be the one the document gives
// for unmatched routes in its root extension x-unmatched-route-responses: a
// 404 problem for an unknown path, a 405 problem with Allow for an unknown
// method on a known path.
package apitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/asyncgate/asyncgate"
)

// UnmatchedRouteExtension is the root extension of the document that maps
// 404 (unknown path) and 405 (unknown method) to the responses, in
// components.responses, that answer requests to routes it does not list.
const UnmatchedRouteExtension = "x-unmatched-route-responses"

// Validator validates responses against an OpenAPI 3 document. It is safe
// for concurrent use.
type Validator struct {
	doc       *openapi3.T
	router    routers.Router
	unmatched map[int]*openapi3.ResponseRef // 404 and 405
	opts      *openapi3filter.Options
}

var defaultValidator = sync.OnceValues(func() (*Validator, error) {
	v, err := New(asyncgate.OpenAPI)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return v, nil
})

// Default returns the validator of the embedded openapi.yaml
// ([asyncgate.OpenAPI]), loaded and checked once per process.
func Default() (*Validator, error) { return defaultValidator() }

// New loads an OpenAPI 3 document, checks that it is valid, and returns a
// validator for its responses. The document must have the root extension
// [UnmatchedRouteExtension].
func New(spec []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("invalid: %w", err)
	}
	unmatched, err := unmatchedResponses(doc)
	if err != nil {
		return nil, err
	}
	// Route by path alone: the document's servers name where the API is
	// deployed, test servers listen on any loopback port. The validator
	// owns doc, so nobody else sees the change.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true, // an undocumented status is an error
		MultiError:            true, // report every mismatch at once
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			// date-time is checked by default; these formats are not.
			openapi3.WithStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562)),
			openapi3.WithStringFormatValidator("uri", openapi3.NewCallbackValidator(validateURI)),
			openapi3.WithStringFormatValidator("uri-reference", openapi3.NewCallbackValidator(validateURIReference)),
		},
	}
	opts.WithCustomSchemaErrorFunc(schemaErrorMessage)
	return &Validator{doc: doc, router: router, unmatched: unmatched, opts: opts}, nil
}

// schemaErrorMessage says where and what, without kin-openapi's dump of
// the whole schema: the test's message shows the body anyway.
func schemaErrorMessage(err *openapi3.SchemaError) string {
	reason := err.Reason
	if reason == "" && err.Origin != nil {
		reason = err.Origin.Error()
	}
	msg := fmt.Sprintf("at %q: %s", "/"+strings.Join(err.JSONPointer(), "/"), reason)
	switch v := err.Value.(type) {
	case map[string]any, []any, nil:
	default:
		msg += fmt.Sprintf(" (got %v)", v)
	}
	return msg
}

func validateURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if !u.IsAbs() {
		return fmt.Errorf("%q is not an absolute URI", s)
	}
	return nil
}

func validateURIReference(s string) error {
	_, err := url.Parse(s)
	return err
}

// unmatchedResponses reads the extension that names the responses to
// requests for unknown routes.
func unmatchedResponses(doc *openapi3.T) (map[int]*openapi3.ResponseRef, error) {
	ext, _ := doc.Extensions[UnmatchedRouteExtension].(map[string]any)
	out := make(map[int]*openapi3.ResponseRef, 2)
	for _, status := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		entry, _ := ext[strconv.Itoa(status)].(map[string]any)
		ref, _ := entry["$ref"].(string)
		name, ok := strings.CutPrefix(ref, "#/components/responses/")
		if !ok {
			return nil, fmt.Errorf("%s must map %d to a $ref into #/components/responses/", UnmatchedRouteExtension, status)
		}
		var r *openapi3.ResponseRef
		if doc.Components != nil {
			r = doc.Components.Responses[name]
		}
		if r == nil || r.Value == nil {
			return nil, fmt.Errorf("%s: %d: no response %s", UnmatchedRouteExtension, status, ref)
		}
		out[status] = r
	}
	return out, nil
}

type unknownRouteKey struct{}

// ExpectUnknownRoute marks r as sent on purpose to a route that the
// document does not list. The validator then requires the route to be
// unknown indeed, and the response to be the document's answer to unknown
// routes: a 404 for an unknown path, a 405 for an unknown method.
func ExpectUnknownRoute(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), unknownRouteKey{}, true))
}

func unknownRouteExpected(r *http.Request) bool {
	v, _ := r.Context().Value(unknownRouteKey{}).(bool)
	return v
}

// ValidateResponse checks the response (status, header, body) that the
// server gave to req against the document: the operation must exist, and
// the status must be one it documents, with the headers and the body that
// the document gives that status. See [ExpectUnknownRoute] for requests
// that are meant to miss.
func (v *Validator) ValidateResponse(req *http.Request, status int, header http.Header, body []byte) error {
	route, params, err := v.router.FindRoute(req)
	expectUnknown := unknownRouteExpected(req)
	switch {
	case err == nil && expectUnknown:
		return fmt.Errorf("the request is marked with apitest.ExpectUnknownRoute, but openapi.yaml has %s %s", route.Method, route.Path)
	case err == nil:
	case errors.Is(err, routers.ErrPathNotFound), errors.Is(err, routers.ErrMethodNotAllowed):
		if !expectUnknown {
			return fmt.Errorf("openapi.yaml has no operation %s %s (%v): document it, or mark a request that is meant to miss with apitest.ExpectUnknownRoute", req.Method, req.URL.Path, err)
		}
		want := http.StatusNotFound
		if errors.Is(err, routers.ErrMethodNotAllowed) {
			want = http.StatusMethodNotAllowed
		}
		if status != want {
			return fmt.Errorf("a request to an unknown route (%v) must get %d, not %d", err, want, status)
		}
		route = &routers.Route{
			Spec: v.doc, Path: req.URL.Path, Method: req.Method,
			Operation: &openapi3.Operation{Responses: openapi3.NewResponses(openapi3.WithStatus(want, v.unmatched[want]))},
		}
	default:
		return fmt.Errorf("find the route: %w", err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: v.opts},
		Status:                 status,
		Header:                 header,
		Options:                v.opts,
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(context.WithoutCancel(req.Context()), in)
}

// Transport returns a RoundTripper that sends requests with base
// (http.DefaultTransport when nil) and validates every response against
// openapi.yaml with the [Default] validator. A response that does not
// match makes t report an error naming the method, path, status and every
// mismatch; the response is returned all the same, its body read and
// restored, so the test can go on and check it.
func Transport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	t.Helper()
	v, err := Default()
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{t: t, v: v, base: base}
}

type transport struct {
	t    testing.TB
	v    *Validator
	base http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("apitest: read the answer to %s %s: %w", req.Method, req.URL.Path, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := tr.v.ValidateResponse(req, resp.StatusCode, resp.Header, body); err != nil {
		tr.t.Errorf("apitest: %s %s answered %d, which openapi.yaml does not allow:\n%v\nbody: %s",
			req.Method, req.URL.RequestURI(), resp.StatusCode, err, truncate(body, 2000))
	}
	return resp, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// Client returns a client of the API at baseURL (scheme://host:port) whose
// responses are validated by [Transport]. Requests with a relative URL,
// such as "/v1/orders?limit=2", go to baseURL. It follows no redirects, so
// the test sees, and the validator checks, what the API answered.
func Client(t testing.TB, baseURL string) *http.Client {
	t.Helper()
	base, err := url.Parse(baseURL)
	if err != nil || base.Scheme == "" || base.Host == "" {
		t.Fatalf("apitest: base URL %q is not scheme://host[:port]", baseURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     baseURLTransport{base: base, next: Transport(t, tr)},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       2 * time.Minute, // a safety net: the longest long-poll is 60s
	}
}

// baseURLTransport sends requests with a relative URL to base.
type baseURLTransport struct {
	base *url.URL
	next http.RoundTripper
}

func (b baseURLTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == "" {
		r := req.Clone(req.Context())
		r.URL = b.base.ResolveReference(req.URL)
		r.Host = ""
		req = r
	}
	return b.next.RoundTrip(req)
}

// Enum returns the values of the string enum schema components.schemas[name]
// of the embedded openapi.yaml, failing t when there is none: tests use it
// to check that the spec documents exactly the values the code has.
func Enum(t testing.TB, name string) []string {
	t.Helper()
	s := Spec(t).Components.Schemas[name]
	if s == nil || s.Value == nil {
		t.Fatalf("openapi.yaml has no schema %s", name)
	}
	var out []string
	for _, e := range s.Value.Enum {
		out = append(out, e.(string))
	}
	return out
}

// Spec returns the embedded openapi.yaml as loaded by [Default], failing t
// when it does not load. Treat it as read-only.
func Spec(t testing.TB) *openapi3.T {
	t.Helper()
	v, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	return v.doc
}
