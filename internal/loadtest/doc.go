// Package loadtest measures how fast asyncgate accepts and completes orders,
// against the real API, real Redis and the downstream simulator, and compares
// the accept path with two baselines from the same run on the same machine:
// a no-op gin handler and raw Asynq enqueues.
//
// # Running
//
// `make bench` runs the load test:
//
//	go test -tags bench -run TestLoad -v -timeout 30m ./internal/loadtest/
//
// It starts one private redis-server, then runs each scenario for
// LOAD_DURATION (default 10s) after a short warm-up, flushing Redis between
// scenarios:
//
//   - gin no-op: 64 clients POST an order to a gin handler that reads the
//     body and answers 202 {};
//   - asynq enqueue: 64 goroutines call asynq.Client.Enqueue directly;
//   - asynq drain: an Asynq server set up like the worker runs tasks
//     already enqueued with a no-op handler, on the worker's three queues
//     and on one queue: the ceiling of the queue itself;
//   - accept: 64 clients POST /v1/orders to the API (no worker);
//   - end to end: API and worker in one process, zero-latency simulator,
//     64 clients placing orders as fast as they can, then waiting until
//     every accepted order is terminal;
//   - steady: orders arrive at a fixed 200/s (open loop) and the time from
//     202 to executed is measured;
//   - webhook: the same steady 200/s with webhooks on and one endpoint
//     subscribed to order.executed on a local 200-OK receiver; the time from
//     an order's terminal status (the delivered data.updated_at) to the
//     receiver's 2xx (target p99 < 200ms) and the deliveries per second,
//     beside the raw asynq drain of the same run. An executed order whose
//     delivery has not arrived by the deadline fails the test;
//   - idle: an API + worker with the default worker configuration, doing
//     nothing for LOAD_DURATION: the Redis commands/s it costs (target
//     ≤ 50).
//
// Issue 16's rows, printed together at the end of the table with their
// baselines of the same run, ratios and targets. The binary is built once
// (or LOAD_BINARY names one, to compare two builds) and run as `asyncgate
// api`, `asyncgate worker` (default configuration) and `asyncgate sim`
// processes, with --durability strict when LOAD_APPENDFSYNC=always (what
// `make bench` sets), relaxed otherwise:
//
//   - pair: the e2e row's baseline, raw Asynq: 64 enqueuers and a server
//     of concurrency 50 with a no-op handler at once on the same Redis; its
//     rate is tasks run per second;
//   - accept-proc: the API process alone, 64 clients (gin: the baseline, a
//     no-op gin handler binding the same JSON); the API process's CPU per
//     request is logged, read from /proc (steadier than rates on a shared
//     machine);
//   - e2e-proc: api, worker and simulator processes, 64 clients placing
//     orders back to back, every order waited for until terminal;
//   - delivery: webhook deliveries (event stored, delivery enqueued, run by
//     the worker's DeliverTask) to a local 200-OK receiver, spread over 16
//     endpoints so that the per-endpoint cap of 4 does not bind, beside raw
//     Asynq tasks whose handler POSTs the same body to the same receiver;
//   - roundtrips: two rounds of 100 orders at once on an in-process API +
//     worker, counted as internal/app's TestRedisRoundTripsPerOrder counts
//     them (the worker's looking for work left out; from the 202: the round
//     trips not made while serving the POST);
//   - rss: api, worker and simulator processes, orders at a paced rate
//     (LOAD_RSS_RATE, else nine tenths of what e2e-proc ended per second,
//     at most 1,000/s) for LOAD_RSS_DURATION (default 5m); the RSS of the
//     api and worker processes from /proc at the end of each fifth; more
//     than 10% growth from the second sample to the last is a MISS.
//
// The paced rows (steady, webhook) and the idle row are issue 16's too.
//
// It prints one table with every figure, the ratios and PASS/MISS against
// the targets, and for each scenario the CPU per operation of this process
// and of redis-server and the Redis round trips per operation: on a shared
// machine these are steadier than rates. The Redis commands per operation
// (from INFO commandstats) are logged. A MISS does not fail the test (figures depend on the
// machine); a lost order or an answer other than 202 does.
//
// Environment knobs: LOAD_DURATION (a Go duration), LOAD_WARMUP (default
// 2s), LOAD_CLIENTS (default 64), LOAD_WORKER_CONCURRENCY (worker pool
// size of the end-to-end scenarios), LOAD_LOG_LEVEL (default info: the
// app logs as in production, formatted and discarded; warnings and errors
// are also printed), LOAD_SCENARIOS (a comma-separated subset of gin,
// asynq, drain, accept, e2e, steady, webhook, idle, pair, accept-proc,
// e2e-proc, delivery, roundtrips, rss; handy with -cpuprofile; the
// processes take ASYNCGATE_PPROF_ADDR from the environment), LOAD_APPENDFSYNC (always, everysec or no: redis-server
// with AOF and that fsync policy; always is strict durability; default no
// AOF). The flag -load.duration overrides LOAD_DURATION.
//
// # Benchmarks
//
// BenchmarkAccept and BenchmarkGinNoop are ordinary Go benchmarks without the
// build tag, so `make test` runs them once to keep them compiling.
//
// The helpers of this package (closed- and open-loop drivers, latency
// percentiles, the report table) carry no build tag so that they are unit
// tested with the rest of the repository.
package loadtest
