package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// EventWebhookTest is the type of the event an endpoint test sends. It is
// not an order event: no endpoint subscribes to it, the feed does not list
// it, and it is never retried.
const EventWebhookTest = "webhook.test"

// TestResult is what an endpoint test saw: one signed attempt, made at
// once, outside the delivery queue, breaker and records.
type TestResult struct {
	// EventID is the webhook-id the test was sent with.
	EventID string `json:"event_id"`
	// Success: the receiver (or broker) took it.
	Success bool `json:"success"`
	// StatusCode is an HTTP receiver's status; 0 when none came back or
	// for brokers.
	StatusCode int `json:"status_code,omitempty"`
	// DurationMS is from sending to the end of the answer (or the error).
	DurationMS float64 `json:"duration_ms"`
	// Headers are the receiver's response headers (the first value each).
	Headers map[string]string `json:"headers,omitempty"`
	// Body is the start of the response body, as text.
	Body          string `json:"body,omitempty"`
	BodyTruncated bool   `json:"body_truncated,omitempty"`
	// Error says why the attempt failed; empty on success.
	Error string `json:"error,omitempty"`
	// Cause is the likely reason of a failure; nil on success.
	Cause *Cause `json:"likely_cause,omitempty"`
}

// Cause is a failure's likely reason: a stable code and advice.
type Cause struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// The codes of Cause.
const (
	CauseTimestampSkew     = "timestamp_skew"
	CauseSecretRotated     = "secret_mismatch_after_rotation"
	CauseSignatureRefused  = "signature_refused"
	CauseTLS               = "tls"
	CauseRedirect          = "redirect"
	CauseTimeout           = "timeout"
	CauseConnectionRefused = "connection_refused"
	CauseDNS               = "dns"
	CauseNotAllowed        = "address_not_allowed"
	CauseNotFound          = "not_found"
	CauseReceiverError     = "receiver_error"
	CauseRefused           = "refused"
)

// CauseCodes lists every Cause code.
var CauseCodes = []string{CauseTimestampSkew, CauseSecretRotated, CauseSignatureRefused, CauseTLS, CauseRedirect, CauseTimeout,
	CauseConnectionRefused, CauseDNS, CauseNotAllowed, CauseNotFound, CauseReceiverError, CauseRefused}

// maxSkew is the timestamp tolerance of Standard Webhooks libraries.
const maxSkew = 5 * time.Minute

// TestEndpoint sends a signed webhook.test event to the tenant's endpoint
// now, whatever its breaker or status, and reports the attempt with the
// likely cause of a refusal. ErrEndpointNotFound.
func (d *Deliverer) TestEndpoint(ctx context.Context, tenant, id string) (*TestResult, error) {
	rec, rawURL, err := d.store.endpointTarget(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	now := d.cfg.Now()
	res := &TestResult{EventID: "evt_" + uuid.NewString()}
	body, _ := json.Marshal(map[string]any{
		"id": res.EventID, "type": EventWebhookTest, "created_at": now.UTC(), "sequence": 0,
		"data": map[string]any{"endpoint_id": id, "message": "a test event from asyncgate; answer 2xx"},
	})
	u, err := d.cfg.Guard.parse(rawURL)
	if err != nil {
		res.Error = err.Error()
		res.Cause = &Cause{CauseNotAllowed, "the endpoint's URL is refused now: " + err.Error()}
		return res, nil
	}
	m := &Message{ID: res.EventID, Type: EventWebhookTest, Body: body, Timestamp: now}
	m.Header = Headers(res.EventID, now, body, rec.secrets(now)...)
	m.Header.Set("Content-Type", "application/json")
	start := time.Now()
	sent := d.senderFor(u.Scheme).Send(ctx, u, m)
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	res.StatusCode, res.Body, res.BodyTruncated = sent.StatusCode, sent.Response, sent.ResponseTruncated
	res.Error = redactURL(sent.Err, u)
	res.Success = sent.Err == ""
	if len(sent.Header) > 0 {
		res.Headers = make(map[string]string, len(sent.Header))
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range sent.Header {
				if !yield(k) {
					return
				}
			}
		}) {
			if len(res.Headers) == 50 {
				break
			}
			res.Headers[k] = sent.Header.Get(k)
		}
	}
	if !res.Success {
		res.Cause = likelyCause(sent, res.Error, rec, now, d.cfg.Timeout)
	}
	return res, nil
}

// likelyCause reads a failed attempt for the reason integrators most often
// have: in order, what the transport says, then what the answer says.
func likelyCause(sent Sent, errText string, rec *endpointRecord, now time.Time, timeout time.Duration) *Cause {
	e := strings.ToLower(errText)
	code := sent.StatusCode
	switch {
	case code == 0 && strings.Contains(e, "refused at connect"):
		return &Cause{CauseNotAllowed, "the URL's host resolves to an address webhooks may not reach: " + errText}
	case code == 0 && (strings.Contains(e, "x509") || strings.Contains(e, "tls") || strings.Contains(e, "certificate")):
		return &Cause{CauseTLS, "the TLS handshake failed; the receiver needs a certificate valid for its host from a public CA: " + errText}
	case code == 0 && strings.Contains(e, "no answer within"):
		return &Cause{CauseTimeout, fmt.Sprintf("no answer within %s; answer 2xx at once and do the work afterwards", timeout)}
	case code == 0 && strings.Contains(e, "connection refused"):
		return &Cause{CauseConnectionRefused, "nothing listens at the URL's host and port"}
	case code == 0 && (strings.Contains(e, "no such host") || strings.Contains(e, "lookup")):
		return &Cause{CauseDNS, "the URL's host does not resolve: " + errText}
	case code >= 300 && code < 400:
		return &Cause{CauseRedirect, fmt.Sprintf("the receiver redirects (%d to %q); redirects are not followed: register the final URL", code, sent.Header.Get("Location"))}
	}
	if code == 400 || code == 401 || code == 403 {
		if date, err := http.ParseTime(sent.Header.Get("Date")); err == nil {
			if skew := date.Sub(now); skew > maxSkew || skew < -maxSkew {
				return &Cause{CauseTimestampSkew, fmt.Sprintf("the receiver's clock is %s off ours; Standard Webhooks libraries refuse a webhook-timestamp more than %s away: fix its clock (NTP)", skew.Round(time.Second).Abs(), maxSkew)}
			}
		}
		if strings.Contains(strings.ToLower(sent.Response), "timestamp") {
			return &Cause{CauseTimestampSkew, "the receiver refused the webhook-timestamp; check its clock (Standard Webhooks allows " + maxSkew.String() + ")"}
		}
		if until := rec.prevExpiresAt(now); until != nil {
			return &Cause{CauseSecretRotated, fmt.Sprintf("the secret was rotated: until %s both the new and the previous secret sign each request, so a receiver still refusing has neither; give it the new secret", until.UTC().Format(time.RFC3339))}
		}
		if code != 400 {
			return &Cause{CauseSignatureRefused, "the receiver refused the request, most likely its signature: verify the raw body bytes with this endpoint's whsec_ secret (rotate it if it was lost)"}
		}
	}
	switch {
	case code == 404 || code == 405:
		return &Cause{CauseNotFound, fmt.Sprintf("the receiver answered %d: check the URL's path and that it accepts POST", code)}
	case code >= 500:
		return &Cause{CauseReceiverError, fmt.Sprintf("the receiver failed (%d); its logs say why", code)}
	}
	return &Cause{CauseRefused, "the receiver refused the request: " + errText}
}

// endpointTarget reads what an attempt to the endpoint needs: its record
// (secrets) and its URL as stored (credentials included).
func (s *Store) endpointTarget(ctx context.Context, tenant, id string) (*endpointRecord, string, error) {
	if !ValidEndpointID(id) {
		return nil, "", ErrEndpointNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.k.endpoint(tenant, id)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("read webhook endpoint: %w", err)
	}
	rec, err := decodeEndpoint(h, s.cfg.Now())
	if err != nil {
		return nil, "", err
	}
	return rec, h["url"], nil
}
