// Package downstream holds the clients of the services asyncgate calls: [Portfolio] (funds and
// reservations) and [Execution] (order execution).
//
// Every call is idempotent by its id and goes through the same machinery, configured per
// downstream by a [Config]:
//
//   - a bulkhead caps the calls in flight ([Config].MaxConcurrent);
//   - a circuit breaker (sony/gobreaker) rejects calls at once while the downstream is failing,
//     with an [*OpenError] that says when to come back;
//   - each attempt has its own timeout, and transient failures are retried with jittered
//     exponential backoff, honouring Retry-After, all within one time budget;
//   - answers are decoded strictly: wrong content type, invalid JSON, missing fields or an
//     oversized body are [ErrBadResponse].
//
// # Errors
//
// Business answers are sentinels: [ErrInsufficientFunds] and [ErrRefused] (with an
// [*RefusedError] carrying the reason). They are final: retrying cannot change them, and they
// do not count against the breaker. Everything else that went wrong is either transient
// ([IsTransient]: timeouts, connection errors, 5xx, 429, bad responses, an open breaker, a full
// bulkhead) and worth trying again later, after [RetryAfter] when it gives a delay, or
// permanent (an unexpected 4xx: a bug on our side). A caller that cancels its context gets
// its context's error back; that call does not count against the breaker either.
package downstream
