// Package downstream holds the clients of the services asyncgate calls: [Portfolio] (funds and
// reservations) and [Execution] (order execution).
//
// Every call is idempotent by its id and goes through the same machinery, configured per
// downstream by a [Config]:
//
//   - a circuit breaker (sony/gobreaker) rejects calls at once while the downstream is failing,
//     with an [*OpenError] that says when it will let a probe through;
//   - a bulkhead caps the calls in flight ([Config].MaxConcurrent); a call that finds it full
//     fails at once with a [*BulkheadError] (unless [Config].BulkheadWait lets it wait), so
//     that a slow downstream cannot hold every goroutine of a worker;
//   - each attempt has its own timeout, and transient failures are retried with jittered
//     exponential backoff, honouring Retry-After, all within one time budget;
//   - answers are decoded strictly: wrong content type, invalid JSON, missing fields or an
//     oversized body are [ErrBadResponse].
//
// # Breakers shared across processes
//
// Each process has its own breaker per downstream. Given a [Shared] ([Config].Shared), the
// breakers of all processes act as one through Redis, with no lock on the call path: a trip
// is recorded with its open-until time and published, every process rejects calls until
// then, and afterwards one process at a time sends the half-open probe, under a short
// Redis lock. A good probe closes the breaker everywhere, a failed one opens it again.
// Without Redis, each breaker decides alone.
//
// # Waiting instead of failing
//
// A call refused before it left (open breaker, full bulkhead) reached nothing: [Postpone]
// says so and when to come back, so that a job can be put back without spending its
// retry budget. [Unprocessed] says that no attempt of a failed call can have been carried
// out.
//
// # Fallback
//
// A [Reader] reads account views through a Portfolio client and keeps the last good view
// of each account per tenant in Redis; when the service cannot answer, it returns that view
// marked stale.
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
//
// # Figures
//
// [Portfolio.Stats] and [Execution.Stats] count attempts sent, failed, and rejected by the
// breaker or the bulkhead; [Portfolio.Breaker] and [Execution.Breaker] give the breaker's
// state; [Config].OnStateChange hears every change. They are the hooks for metrics.
package downstream
