package downstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestIsTransient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"insufficient funds", fmt.Errorf("reserve r: %w", ErrInsufficientFunds), false},
		{"refused", fmt.Errorf("execute e: %w", &RefusedError{Reason: "no"}), false},
		{"caller canceled", context.Canceled, false},
		{"caller canceled in attempt", fmt.Errorf("%w: %w", errCallerDone, context.Canceled), false},
		{"400", &StatusError{Code: 400}, false},
		{"404", &StatusError{Code: 404}, false},
		{"409 unexpected", &StatusError{Code: 409}, false},
		{"301", &StatusError{Code: 301}, false},
		{"408", &StatusError{Code: 408}, true},
		{"429", &StatusError{Code: 429}, true},
		{"500", &StatusError{Code: 500}, true},
		{"503 wrapped", fmt.Errorf("get: %w", &StatusError{Code: 503}), true},
		{"deadline", context.DeadlineExceeded, true},
		{"bad response", fmt.Errorf("%w: missing price", ErrBadResponse), true},
		{"breaker open", &OpenError{Downstream: "execution"}, true},
		{"bulkhead full", fmt.Errorf("x: %w", ErrBulkheadFull), true},
		{"connection error", &connError{&url.Error{Op: "Post", URL: "http://x", Err: errors.New("connection refused")}}, true},
		{"url error", &url.Error{Op: "Get", URL: "http://x", Err: io.EOF}, true},
		{"net error", &net.OpError{Op: "dial", Err: errors.New("refused")}, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"other", errors.New("encode request: bad"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"nil", nil, 0, false},
		{"open", fmt.Errorf("x: %w", &OpenError{RetryAfter: 3 * time.Second}), 3 * time.Second, true},
		{"open half-open", &OpenError{}, 0, false},
		{"status", &StatusError{Code: 503, RetryAfter: time.Second}, time.Second, true},
		{"status without header", &StatusError{Code: 503}, 0, false},
		{"other", ErrBadResponse, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := RetryAfter(tt.err)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("RetryAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"2", 2 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"99999999999999", maxRetryAfter},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	future := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	if got := parseRetryAfter(future); got <= 25*time.Second || got > 30*time.Second {
		t.Errorf("parseRetryAfter(%q) = %v, want about 30s", future, got)
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&RefusedError{Reason: "symbol X is not tradable"}, "execution refused: symbol X is not tradable"},
		{&RefusedError{}, "execution refused"},
		{&OpenError{Downstream: "portfolio", RetryAfter: 1500 * time.Millisecond}, "portfolio: circuit breaker open, retry in 1.5s"},
		{&OpenError{Downstream: "portfolio"}, "portfolio: circuit breaker open"},
		{&StatusError{Downstream: "execution", Code: 502}, "execution: unexpected status 502"},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
