//go:build bench

package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/app"
	"github.com/asyncgate/asyncgate/internal/proctest"
	"github.com/asyncgate/asyncgate/jobs"
)

// Issue 16's rows that run asyncgate as separate processes: the binary is
// built once per run (proctest.Build) and started as `asyncgate api`,
// `asyncgate worker` and `asyncgate sim` on the run's redis-server, with
// --durability strict when that server fsyncs every write
// (LOAD_APPENDFSYNC=always), relaxed otherwise.

// binary builds cmd/asyncgate once per run, unless LOAD_BINARY names one
// (to compare two builds on the same machine).
func (e *loadEnv) binary() string {
	e.t.Helper()
	if e.bin == "" && os.Getenv("LOAD_BINARY") != "" {
		e.bin = os.Getenv("LOAD_BINARY")
	}
	if e.bin == "" {
		bin, clean, err := proctest.Build()
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(clean)
		e.bin = bin
	}
	return e.bin
}

func (e *loadEnv) durability() string {
	if e.cfg.appendfsync == "always" {
		return "strict"
	}
	return "relaxed"
}

// procs is an asyncgate deployment of separate processes.
type procs struct {
	api, worker, sim *proctest.Proc
	url              string // the API's
}

func (p *procs) stop() {
	for _, c := range []*proctest.Proc{p.api, p.worker, p.sim} {
		if c != nil {
			c.Kill()
		}
	}
}

// startProcs starts the API process and, with worker, the simulator and a
// worker process (the binary's default configuration: concurrency 50).
func (e *loadEnv) startProcs(worker bool) *procs {
	e.t.Helper()
	bin := e.binary()
	redisURL := e.redis.URL(0)
	p := &procs{}
	apiAddr := freeAddr(e.t)
	p.api = proctest.Start(e.t, bin, "api", "--redis", redisURL, "--addr", apiAddr,
		"--api-keys", apiKey+"="+tenant+","+warmKey+"="+warmTenant, "--rate-limit", "off", "--log-level", "warn",
		"--durability", e.durability())
	p.url = "http://" + apiAddr
	waitHTTP(e.t, p.url+"/healthz")
	if worker {
		simAddr := freeAddr(e.t)
		p.sim = proctest.Start(e.t, bin, "sim", "--addr", simAddr)
		simURL := "http://" + simAddr
		waitHTTP(e.t, simURL+"/_sim/faults")
		p.worker = proctest.Start(e.t, bin, "worker", "--redis", redisURL, "--portfolio-url", simURL, "--execution-url", simURL,
			"--log-level", "warn", "--durability", e.durability())
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitHTTP polls url until it answers 200, for up to 30s.
func waitHTTP(t *testing.T, url string) {
	t.Helper()
	c := &http.Client{Timeout: time.Second}
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if res, err := c.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("%s did not answer 200 within 30s", url)
}

// acceptProc is the API process alone: 64 clients POST orders (nobody runs
// them). Every 202 must be a stored order.
func (e *loadEnv) acceptProc(ctx context.Context) Row {
	p := e.startProcs(false)
	defer p.stop()
	ps := poster{c: e.http, url: p.url + "/v1/orders"}
	op := func(key string) Op {
		return func(ctx context.Context, _ int) error { _, err := ps.post(ctx, key, orderBody); return err }
	}
	e.check("accept (api process) warm-up", ClosedLoop(ctx, e.cfg.clients, e.cfg.warmup, op(warmKey)))
	before, apiBefore := e.usage(ctx), procCPU(e.t, p.api.Pid())
	r := ClosedLoop(ctx, e.cfg.clients, e.cfg.duration, op(apiKey))
	apiCPU := procCPU(e.t, p.api.Pid()) - apiBefore
	c := e.cost(ctx, "accept (api process)", before, r.Ops)
	e.check("accept (api process)", r)
	if r.Ops > 0 {
		e.t.Logf("accept (api process): the API process's CPU per request: %v", apiCPU/time.Duration(r.Ops))
	}
	ids, err := e.store.InFlight(ctx, tenant, time.Now().Add(time.Hour), r.Ops+r.Errors+1)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(ids) < r.Ops {
		e.t.Errorf("accept (api process): %d orders answered 202 but only %d stored", r.Ops, len(ids))
	}
	row := RowOf("accept: api process, POST /v1/orders", "orders/s", "request (202)", r)
	row.Cost = c
	row.Cost.RedisCalls = 0 // the API's calls are not this process's
	return row
}

// endToEndProc is the e2e scenario on separate api, worker and simulator
// processes: 64 clients place orders back to back, then every order is
// waited for until terminal.
func (e *loadEnv) endToEndProc(ctx context.Context) settled {
	p := e.startProcs(true)
	defer p.stop()
	ps := poster{c: e.http, url: p.url + "/v1/orders"}
	seq := make([]int, e.cfg.clients)
	body := func(c int) []byte { n := seq[c]; seq[c]++; return orderBodyFor(c, n) }
	var warmLog, log acceptLog
	e.check("e2e (processes) warm-up", ClosedLoop(ctx, e.cfg.clients, e.cfg.warmup, placer(ps, warmKey, &warmLog, body)))
	e.waitIdle(ctx, e.store, warmTenant)
	e.settle(ctx, e.store, warmTenant, &warmLog, "")

	before := e.usage(ctx)
	post := ClosedLoop(ctx, e.cfg.clients, e.cfg.duration, placer(ps, apiKey, &log, body))
	postEnd := time.Now()
	e.check("e2e (processes)", post)
	e.waitIdle(ctx, e.store, tenant)
	cost := e.cost(ctx, "e2e (processes)", before, post.Ops)
	cost.RedisCalls = 0
	s := e.settle(ctx, e.store, tenant, &log, "")
	s.row.Scenario, s.row.Latency, s.row.Cost = "e2e: api + worker + sim processes, 202 → terminal", "202 to terminal status", cost
	s.drain, _ = s.rateAfter(postEnd)
	s.during = float64(post.Ops) / post.Elapsed.Seconds()
	return s
}

// asynqPair is issue 16's baseline of the e2e row: raw Asynq no-op tasks,
// 64 enqueuers (closed loop, as the API enqueues an order) and one server
// of concurrency 50 running them with a no-op handler, at the same time on
// the same Redis. The rate is tasks run per second during the measurement.
func (e *loadEnv) asynqPair(ctx context.Context) Row {
	c := asynq.NewClientFromRedisClient(e.rdb)
	var ran atomic.Int64
	// The server has a client of its own, as a worker process would: on
	// the enqueuers' pool its dequeues queue up behind 64 enqueuers.
	own, err := app.NewRedis(e.redis.URL(0))
	if err != nil {
		e.t.Fatal(err)
	}
	defer own.Close()
	srv := asynq.NewServerFromRedisClient(own, asynq.Config{
		Concurrency: 50, Queues: map[string]int{jobs.QueueOrders: 1},
		TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.WarnLevel,
	})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { ran.Add(1); return nil })); err != nil {
		e.t.Fatal(err)
	}
	defer srv.Shutdown()
	var seq atomic.Int64
	op := func(ctx context.Context, _ int) error {
		id := fmt.Sprintf("00000000-0000-7000-8000-%012d", seq.Add(1))
		_, err := c.EnqueueContext(ctx, asynq.NewTask("load:noop", []byte(`{"t":"load","id":"`+id+`"}`),
			asynq.TaskID(id), asynq.Queue(jobs.QueueOrders), asynq.MaxRetry(10), asynq.Timeout(time.Minute)))
		return err
	}
	e.check("asynq pair warm-up", ClosedLoop(ctx, e.cfg.clients, e.cfg.warmup, op))
	before := e.usage(ctx)
	ran0, start := ran.Load(), time.Now()
	r := ClosedLoop(ctx, e.cfg.clients, e.cfg.duration, op)
	n, elapsed := ran.Load()-ran0, time.Since(start)
	cost := e.cost(ctx, "asynq pair", before, int(n))
	e.check("asynq pair", r)
	row := RowOf("baseline: asynq enqueue (64) + run no-op (concurrency 50)", "tasks/s", "Enqueue call", r)
	row.N, row.Rate, row.Cost = int(n), float64(n)/elapsed.Seconds(), cost
	e.t.Logf("asynq pair: %.0f enqueued/s, %.0f run/s", r.Rate(), row.Rate)
	return row
}

// rssFigures is what the RSS scenario measured: each process's RSS after
// each of its minutes.
type rssFigures struct {
	rate        float64 // orders/s asked
	posted      Row
	api, worker []int64 // KiB, one per sample
	ended       settled
}

// growth is how much the last sample exceeds the second, in percent.
func growth(s []int64) float64 {
	if len(s) < 2 || s[1] == 0 {
		return 0
	}
	return 100 * float64(s[len(s)-1]-s[1]) / float64(s[1])
}

func kib(s []int64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprintf("%.0f", float64(v)/1024)
	}
	return strings.Join(parts, " ")
}

// rss runs separate api, worker and simulator processes with orders
// arriving at rate (open loop) for LOAD_RSS_DURATION (default 5m), and
// samples the RSS of the api and worker processes from /proc at the end of
// each fifth of it (each minute by default). Every accepted order must end.
func (e *loadEnv) rss(ctx context.Context, rate float64) rssFigures {
	total := 5 * time.Minute
	if v := os.Getenv("LOAD_RSS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			e.t.Fatalf("LOAD_RSS_DURATION=%q: want a positive duration such as 5m", v)
		}
		total = d
	}
	p := e.startProcs(true)
	defer p.stop()
	ps := poster{c: e.http, url: p.url + "/v1/orders"}
	// Accounts of 1,000 orders each, spread over clients' worth of them.
	body := func(n int) []byte { return orderBodyFor(n%e.cfg.clients, n/e.cfg.clients) }
	f := rssFigures{rate: rate}
	var log acceptLog
	var runs []Run
	start := time.Now()
	for i := range 5 {
		r := OpenLoop(ctx, rate, total/5, func(ctx context.Context, n int) error {
			return placer(ps, apiKey, &log, body)(ctx, i*int(rate*total.Seconds()/5)+n)
		})
		e.check(fmt.Sprintf("rss, part %d", i+1), r)
		runs = append(runs, r)
		f.api = append(f.api, rssKiB(e.t, p.api.Pid()))
		f.worker = append(f.worker, rssKiB(e.t, p.worker.Pid()))
		e.t.Logf("rss: after %v: api %d KiB, worker %d KiB; %.0f orders/s posted", time.Since(start).Round(time.Second), f.api[i], f.worker[i], r.Rate())
	}
	var all Run
	for _, r := range runs {
		all.Ops += r.Ops
		all.Elapsed += r.Elapsed
		all.Latencies = append(all.Latencies, r.Latencies...)
	}
	all.Latencies = MergeLatencies(all.Latencies)
	f.posted = RowOf(fmt.Sprintf("rss run %.0f/s for %v: POST", rate, total), "orders/s", "request, from when due", all)
	e.waitIdle(ctx, e.store, tenant)
	f.ended = e.settle(ctx, e.store, tenant, &log, "")
	f.ended.row.Scenario, f.ended.row.Latency = fmt.Sprintf("rss run %.0f/s for %v: 202 → terminal", rate, total), "202 to terminal status"
	return f
}

// procCPU reads a process's CPU time (user and system) from /proc.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read CPU time: %v", err)
	}
	// The fields after the command (in parentheses, which may hold spaces):
	// state is the first; utime and stime the 12th and 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ, 100 on Linux
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read RSS: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
