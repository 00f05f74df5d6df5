// Package chaos proves, with real redis-servers, the downstream simulator and several
// `asyncgate worker` processes, that a failing downstream neither loses nor duplicates
// orders and does not cascade: breakers shared across processes, postponed work,
// bulkheads and deadlines. It has tests only.
//
// # Tests
//
// `go test ./internal/chaos/` runs, each against its own redis-server:
//
//   - TestOutage: 500 orders over two worker processes while the portfolio service answers
//     503 (and, separately, resets every connection) for a while; prints the calls that
//     reached the failing service, and checks that every order is executed exactly once,
//     that no retry budget is spent on the outage and that the API answers 202 throughout;
//   - TestFlapping: a downstream down every other second;
//   - TestSlowDownstream: every execution call takes 5 s; bulkheads keep the worker's other
//     queues and the API flowing;
//   - TestDeadline: a downstream that never comes back ends orders failed with
//     downstream_unavailable and their funds released;
//   - TestBadAnswers: invalid JSON, a wrong content type, a missing field, a 100 MiB body.
//
// # Figures
//
// `make bench` runs, with the build tag bench, TestOutageFigures: the 20 s outage with
// breakers shared through Redis side by side with breakers that share nothing (the
// baseline), in both outage modes, and the throughput of a healthy run with each. It
// prints one table: the calls wasted on the failing downstream during the outage, the
// time from recovery to the first completion, the orders/s of the backlog drain after
// recovery, and the orders/s when healthy.
package chaos
