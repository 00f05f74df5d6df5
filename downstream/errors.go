package downstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

var (
	// ErrInsufficientFunds is the portfolio's answer (409) to a reservation the account
	// cannot cover. It is final for that reservation id.
	ErrInsufficientFunds = errors.New("insufficient funds")

	// ErrUnknownAccount is the portfolio's answer (404, error "unknown_account") for an
	// account the tenant does not have: accounts belong to tenants, and the portfolio
	// service, which every call tells the tenant, knows whose they are. It is final.
	ErrUnknownAccount = errors.New("unknown account")

	// ErrRefused is the execution service's answer (422) to an order it will not execute.
	// Errors that match it are an [*RefusedError] with the reason.
	ErrRefused = errors.New("execution refused")

	// ErrBreakerOpen matches the [*OpenError] of a call the circuit breaker rejected.
	ErrBreakerOpen = errors.New("circuit breaker open")

	// ErrBulkheadFull matches the [*BulkheadError] of a call that found no free slot in the
	// bulkhead.
	ErrBulkheadFull = errors.New("too many calls in flight")

	// ErrBadResponse is an answer that cannot be used: wrong content type, invalid JSON,
	// a missing or invalid field, or a body over the size limit.
	ErrBadResponse = errors.New("bad response")
)

// RefusedError is the execution service's refusal of an order. It matches [ErrRefused].
type RefusedError struct {
	// Reason is the service's explanation; it may be empty.
	Reason string
}

// Error implements error.
func (e *RefusedError) Error() string {
	if e.Reason == "" {
		return ErrRefused.Error()
	}
	return ErrRefused.Error() + ": " + e.Reason
}

// Is reports whether target is ErrRefused.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// OpenError is a call rejected by an open (or busy half-open) circuit breaker, without
// calling the downstream. It matches [ErrBreakerOpen].
type OpenError struct {
	// Downstream is "portfolio" or "execution".
	Downstream string
	// RetryAfter is how long the breaker stays open; zero when it is half-open and its
	// probes are in flight.
	RetryAfter time.Duration
}

// Error implements error.
func (e *OpenError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%s: %s, retry in %s", e.Downstream, ErrBreakerOpen, e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("%s: %s", e.Downstream, ErrBreakerOpen)
}

// Is reports whether target is ErrBreakerOpen.
func (e *OpenError) Is(target error) bool { return target == ErrBreakerOpen }

// BulkheadError is a call rejected, without calling the downstream, because as many
// calls as the bulkhead allows were in flight. It matches [ErrBulkheadFull].
type BulkheadError struct {
	// Downstream is "portfolio" or "execution".
	Downstream string
	// RetryAfter is a jittered guess of when a slot will be free.
	RetryAfter time.Duration
}

// Error implements error.
func (e *BulkheadError) Error() string {
	return fmt.Sprintf("%s: %s", e.Downstream, ErrBulkheadFull)
}

// Is reports whether target is ErrBulkheadFull.
func (e *BulkheadError) Is(target error) bool { return target == ErrBulkheadFull }

// StatusError is an HTTP status the client did not expect from the downstream.
type StatusError struct {
	// Downstream is "portfolio" or "execution".
	Downstream string
	// Code is the HTTP status code.
	Code int
	// RetryAfter is the delay of the Retry-After header, zero without one.
	RetryAfter time.Duration
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: unexpected status %d", e.Downstream, e.Code)
}

// connError is a failure to talk to the downstream: connecting, sending, a timeout, or a
// body that broke off.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// errCallerDone marks an attempt that failed because the caller's context ended; such an
// attempt says nothing about the downstream, so the breaker ignores it.
var errCallerDone = errors.New("caller gave up")

// IsTransient reports whether err may go away when the call is tried again later: timeouts,
// connection errors, 5xx, 408 and 429 statuses, bad responses, an open breaker and a full
// bulkhead. Business answers (ErrInsufficientFunds, ErrUnknownAccount, ErrRefused), other statuses (a 400 or 404
// is a bug on our side), the caller's context.Canceled and nil are not.
func IsTransient(err error) bool {
	if err == nil ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, ErrInsufficientFunds) ||
		errors.Is(err, ErrUnknownAccount) ||
		errors.Is(err, ErrRefused) {
		return false
	}
	if se, ok := errors.AsType[*StatusError](err); ok {
		return se.Code >= 500 || se.Code == 429 || se.Code == 408
	}
	if errors.Is(err, ErrBadResponse) ||
		errors.Is(err, ErrBreakerOpen) ||
		errors.Is(err, ErrBulkheadFull) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	if _, ok := errors.AsType[*connError](err); ok {
		return true
	}
	_, ok := errors.AsType[net.Error](err)
	return ok
}

// RetryAfter returns the delay err suggests before trying again: how long an open breaker
// stays open, when a bulkhead slot may be free, or a Retry-After header. It reports false
// when err suggests none.
func RetryAfter(err error) (time.Duration, bool) {
	if oe, ok := errors.AsType[*OpenError](err); ok && oe.RetryAfter > 0 {
		return oe.RetryAfter, true
	}
	if be, ok := errors.AsType[*BulkheadError](err); ok && be.RetryAfter > 0 {
		return be.RetryAfter, true
	}
	if se, ok := errors.AsType[*StatusError](err); ok && se.RetryAfter > 0 {
		return se.RetryAfter, true
	}
	return 0, false
}

// Postpone reports whether err is a call that the client refused to send because the
// downstream is unavailable for now (an open breaker, a full bulkhead), and how long to
// wait before trying again: when the breaker next lets a probe through, or a slot may be
// free. Such a call reached nothing; trying it later is not a retry of a failure.
func Postpone(err error) (time.Duration, bool) {
	if !errors.Is(err, ErrBreakerOpen) && !errors.Is(err, ErrBulkheadFull) {
		return 0, false
	}
	d, ok := RetryAfter(err)
	if !ok {
		d = maxProbeWait
	}
	return d, true
}

// unprocessedError marks a transient failure of a call none of whose attempts
// can have been acted upon by the downstream.
type unprocessedError struct{ err error }

func (e *unprocessedError) Error() string { return e.err.Error() }
func (e *unprocessedError) Unwrap() error { return e.err }

func markUnprocessed(err error, acted bool) error {
	if acted || !IsTransient(err) {
		return err
	}
	return &unprocessedError{err}
}

// refusedUnprocessed reports whether one attempt's error proves that the
// downstream did not act on it: no request left (open breaker, full
// bulkhead, refused connection), or the answer said so (503, 429).
func refusedUnprocessed(err error) bool {
	if errors.Is(err, ErrBreakerOpen) || errors.Is(err, ErrBulkheadFull) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if se, ok := errors.AsType[*StatusError](err); ok {
		return se.Code == http.StatusServiceUnavailable || se.Code == http.StatusTooManyRequests
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "dial" {
		return true
	}
	return false
}

// Unprocessed reports whether err is a transient failure of a call that the
// downstream certainly did not act upon: every attempt was refused before or
// without processing (503, 429, refused connection, open breaker, full
// bulkhead). A timeout or a reset connection may hide a request that was
// carried out, so it is not unprocessed. The saga uses this to know that an
// execution did not happen without asking again.
func Unprocessed(err error) bool {
	_, ok := errors.AsType[*unprocessedError](err)
	return ok
}
