// Package chaos proves the invariants of DESIGN under failure, with real redis-servers,
// the downstream simulator and asyncgate processes. It has tests only; its checker is the
// package invariant below it.
//
// # The invariants under every fault
//
// TestInvariants runs each scenario on a fresh deployment of separate processes: a
// redis-server with AOF, `asyncgate sim`, `asyncgate api`, two `asyncgate worker`s, and a
// webhook receiver (in the test process, on its own port) that verifies each delivery's
// Standard Webhooks signature on its own and logs it (webhook-id, event type, order id,
// signature valid) to a file. Two tenants each have an API key and an endpoint at the
// receiver. Honest clients of both tenants place orders, retrying each placement with the
// same Idempotency-Key and body on errors, timeouts and 409s; every 202 is recorded. As
// the API's guide asks, each order carries a client_order_id (a 409
// duplicate_client_order_id names, in Location, the order a lost answer had placed) and,
// in its metadata, the client's intent.
// Every downstream call takes 200 ms, so that a fault finds orders halfway through their
// saga. While the orders flow, the scenario injects its fault:
//
//   - kill -9 of a worker, restarted or not; of the API, three times, restarted (also with
//     clients that send only an Idempotency-Key, which alone must prevent a second order);
//     of Redis, restarted from its AOF (appendfsync always);
//   - a host crash of Redis: redis-server runs under strace, which logs its writes to and
//     fsyncs of the AOF; the crash kills it and cuts the AOF back to its last fsync
//     (redistest.Server.Crash), under appendfsync always (strict durability: nothing
//     acknowledged is lost) and everysec (relaxed: the last second is, and the checker
//     must count it);
//   - downstream outage (portfolio 503, execution resetting connections) and flapping;
//   - the receiver down (its port refusing connections) and slow (3 s an answer for one
//     tenant);
//   - 300 slow-body clients trickling a POST's body at the API (all must be cut off once
//     the API has read timeouts).
//
// Then invariant.Checker reads only the public API (GET /v1/orders/{id} with the tenant's
// key, and GET /v1/orders to find orders no client got a 202 for), the simulator's ledger
// (GET /_sim/orders/{id}) and the receiver's log, waits until nothing is in flight any
// more, and prints one table per scenario: accepted, without a 202, lost,
// stuck, executed twice, outcome disagrees, reservations leaked, webhooks missing,
// duplicate webhooks, bad signatures, wrong tenant, time to finish after the last fault.
// Every count but duplicates must be 0 (the relaxed crash must show its loss).
//
// `go test ./internal/chaos/` runs the short version: the worker, API and Redis kills and
// the strict host crash, 100 orders each (about 90 s, most of it waiting for the orders a
// killed worker held). `make chaos` (ASYNCGATE_CHAOS=long) runs every scenario with 250
// orders each, 3,000 in all, and prints the tables as one Markdown table, the one in the
// README.
//
// # Topologies, failover and SIGTERM
//
// A deployment takes a Redis topology (one redis-server; a Sentinel-managed master with a
// replica and three sentinels; a Redis Cluster from redistest.StartCluster), N API and M
// worker processes, and more tenants; the clients take turns over the APIs. In
// scale_test.go, with two APIs and two workers each:
//
//   - TestSentinelUnderLoad: kill -9 of the master mid-run (restarted, it rejoins as a
//     replica); with --redis-min-replicas 1 nothing may be lost; without it (long only)
//     the loss is reported;
//   - TestSIGTERMUnderLoad: SIGTERM to every process mid-run, on one Redis and on a
//     3-master cluster; each must exit 0 within its grace period (the checker's "exited
//     late"), then all start again;
//   - TestClusterEndToEnd: 200 orders of four tenants (1,000 in the long run) on a
//     3-master cluster, and a table of what each master holds (keys, queue shards,
//     tenants), each master asserted to hold some of each;
//   - TestClusterFailover (long only): three masters with a replica each, kill -9 of a
//     master, with and without --redis-min-replicas 1.
//
// # Downstream faults in detail
//
// `go test ./internal/chaos/` also runs, each against its own redis-server:
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
// recovery, and the orders/s when healthy. TestScaleFigures prints the scale table:
// end-to-end orders/s with separate processes, 1 vs 2 workers on one Redis and a
// 3-master cluster with --queue-shards 1 vs 16, with ratios and Redis commands per order
// summed over every node.
package chaos
