package webhooks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"
)

// DefaultSchedule is the default wait before each retry of a delivery: the
// first attempt goes at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
// 10 h later, each ±20 %: eight attempts over about a day and a half.
var DefaultSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// DelivererConfig configures a Deliverer.
type DelivererConfig struct {
	// Guard checks where deliveries go, at every connect. Defaults to the
	// store's guard.
	Guard *Guard
	// Transport sends the requests. Defaults to an http.Transport that
	// dials through Guard and uses no proxy (a proxy would connect to the
	// target on our behalf, past the guard). Tests may replace it.
	Transport http.RoundTripper
	// Timeout bounds one attempt, from connecting to the end of the
	// response. Defaults to 15s.
	Timeout time.Duration
	// Schedule is the wait before each retry; a delivery with more
	// attempts than len(Schedule)+1 (after a redelivery) waits the last
	// entry. Defaults to DefaultSchedule. Tests compress it.
	Schedule []time.Duration
	// Jitter spreads each wait by up to ± this fraction. Defaults to 0.2;
	// negative means none.
	Jitter float64
	// MaxResponseBytes is how much of a response body is read and logged.
	// Defaults to 4096.
	MaxResponseBytes int
	// MaxRetryAfter caps the Retry-After a receiver can ask for on a 429
	// or 503. Defaults to 24h.
	MaxRetryAfter time.Duration
	// BreakerThreshold is how many consecutive failed attempts to one
	// endpoint open its breaker. Defaults to 5.
	BreakerThreshold int
	// BreakerCooldown is how long an open breaker postpones the endpoint's
	// deliveries, doubling with each further failure up to
	// BreakerMaxCooldown. Then one attempt probes the endpoint. Default to
	// 30s and 1h.
	BreakerCooldown, BreakerMaxCooldown time.Duration
	// EndpointConcurrency caps the attempts in flight to one endpoint (and
	// to one tenant's callback URLs, together), across every worker: one
	// slow or dead receiver holds at most this many delivery slots, and its
	// other deliveries wait in Redis. Defaults to 4; negative: no cap.
	EndpointConcurrency int
	// SlotWait is how long a delivery that found its endpoint's slots all
	// taken waits before it looks again (the queue adds backoff and
	// jitter). Defaults to 1s.
	SlotWait time.Duration
	// SlotLocalWait is how long a delivery waits in this process for one
	// of its endpoint's slots before it is postponed by SlotWait: the
	// deliveries to an endpoint queue in the worker for milliseconds while
	// its attempts end, instead of coming back a second later. A delivery
	// that finds the slots taken by other processes looks once more within
	// this bound. It is also the longest a slow endpoint's waiting delivery
	// holds a worker slot. Defaults to 50ms; negative: no local wait (every
	// delivery that finds the slots full is postponed).
	SlotLocalWait time.Duration
	// DisableAfter disables an endpoint whose attempts have all failed for
	// this long. Defaults to 5 days.
	DisableAfter time.Duration
	// UserAgent is sent with every request. Defaults to "asyncgate-webhooks/1".
	UserAgent string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Metrics receives the attempts' outcomes and latencies. Defaults to none.
	Metrics Metrics
	// AMQP and NATS carry the deliveries to amqp(s):// and nats:// or
	// tls:// URLs. Default to the senders of send_amqp.go and send_nats.go,
	// which dial through Guard; tests wrap them.
	AMQP, NATS Sender
	// BrokerIdle is how long a broker connection stays open unused.
	// Defaults to 2m.
	BrokerIdle time.Duration
}

func (c DelivererConfig) withDefaults(store *Store) DelivererConfig {
	if c.Guard == nil {
		c.Guard = store.cfg.Guard
	}
	if c.Timeout == 0 {
		c.Timeout = 15 * time.Second
	}
	if c.Schedule == nil {
		c.Schedule = DefaultSchedule
	}
	if c.Jitter == 0 {
		c.Jitter = 0.2
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 4096
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = 24 * time.Hour
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = 5
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = 30 * time.Second
	}
	if c.BreakerMaxCooldown == 0 {
		c.BreakerMaxCooldown = time.Hour
	}
	if c.EndpointConcurrency == 0 {
		c.EndpointConcurrency = 4
	}
	if c.SlotWait == 0 {
		c.SlotWait = time.Second
	}
	if c.SlotLocalWait == 0 {
		c.SlotLocalWait = 50 * time.Millisecond
	}
	if c.DisableAfter == 0 {
		c.DisableAfter = 5 * 24 * time.Hour
	}
	if c.UserAgent == "" {
		c.UserAgent = "asyncgate-webhooks/1"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	if c.BrokerIdle == 0 {
		c.BrokerIdle = 2 * time.Minute
	}
	return c
}

func (c DelivererConfig) validate() error {
	if len(c.Schedule) == 0 {
		return errors.New("webhooks: the retry schedule is empty")
	}
	for _, d := range c.Schedule {
		if d < 0 {
			return errors.New("webhooks: the retry schedule has a negative wait")
		}
	}
	if c.Jitter >= 1 {
		return errors.New("webhooks: jitter must be below 1")
	}
	return nil
}

// Deliverer makes delivery attempts: it signs the event, POSTs it, reads
// the start of the answer, records the attempt, and says what should happen
// next. It knows nothing of queues: jobs turns its Results into task
// outcomes.
type Deliverer struct {
	store   *Store
	cfg     DelivererConfig
	senders senders
	breaker breakerConfig
	slots   slotConfig
	// local orders this process's attempts to each endpoint; nil without
	// an endpoint cap or with no local wait.
	local *localSlots
	// disableMsg is the reason given when a long run of failures disables
	// an endpoint.
	disableMsg string
}

// NewDeliverer returns a deliverer recording into store.
func NewDeliverer(store *Store, cfg DelivererConfig) (*Deliverer, error) {
	cfg = cfg.withDefaults(store)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Deliverer{store: store, cfg: cfg, disableMsg: fmt.Sprintf("every attempt failed for %s", cfg.DisableAfter)}
	d.senders = senders{http: newHTTPSender(cfg), amqp: cfg.AMQP, nats: cfg.NATS}
	if d.senders.amqp == nil {
		d.senders.amqp = newAMQPSender(cfg)
	}
	if d.senders.nats == nil {
		d.senders.nats = newNATSSender(cfg)
	}
	d.breaker = breakerConfig{
		threshold: cfg.BreakerThreshold, cooldown: cfg.BreakerCooldown, maxCool: cfg.BreakerMaxCooldown,
		disableAfter: cfg.DisableAfter,
	}
	// A slot outlives the longest attempt (the client's timeout) by a
	// margin; it is given back as soon as the attempt is recorded.
	d.slots = slotConfig{max: max(cfg.EndpointConcurrency, 0), ttl: cfg.Timeout + 15*time.Second}
	if d.slots.max > 0 && cfg.SlotLocalWait > 0 {
		d.local = newLocalSlots(d.slots.max)
	}
	return d, nil
}

// Close closes the idle connections to receivers and the connections to
// brokers.
func (d *Deliverer) Close() { d.senders.close() }

// Timeout is the bound of one attempt.
func (d *Deliverer) Timeout() time.Duration { return d.cfg.Timeout }

// Outcome says what became of a delivery task.
type Outcome int

// Outcomes of Deliver.
const (
	// Done: nothing more to do for now. The delivery was delivered, or is
	// held (endpoint disabled), or is gone (expired, endpoint deleted), or
	// was already delivered or failed.
	Done Outcome = iota
	// Retry: the attempt failed; try again after Result.Delay. It spent
	// one attempt of the budget.
	Retry
	// Postpone: no attempt was made (the endpoint's breaker is open, its
	// delivery slots are all taken, or the delivery is not due yet); try
	// again after Result.Delay. It spent nothing.
	Postpone
	// Exhausted: the last attempt of the budget failed; the delivery is
	// marked failed. Send the task to the dead-letter queue.
	Exhausted
)

func (o Outcome) String() string {
	switch o {
	case Done:
		return "done"
	case Retry:
		return "retry"
	case Postpone:
		return "postpone"
	case Exhausted:
		return "exhausted"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is what Deliver did and what should happen next.
type Result struct {
	Outcome Outcome
	// Delay is the wait before the next try, for Retry and Postpone.
	Delay time.Duration
	// Status is the delivery's status after the call ("" when unknown).
	Status string
	// Err says why the attempt failed, for Retry and Exhausted, or why it
	// was postponed.
	Err error
}

// Deliver makes one attempt of the delivery r, if it is due and its
// endpoint may be tried, and records it. The returned error is for
// failures of the store (Redis), which leave the attempt unrecorded: the
// task should be retried. A ctx that ends during the request (the worker
// is shutting down) also returns an error, and records nothing: the task
// runs again elsewhere, with the same webhook-id.
func (d *Deliverer) Deliver(ctx context.Context, r Ref) (Result, error) {
	var waitStart time.Time
	if d.local != nil {
		// Queue for the endpoint in this process first, for a bounded
		// time: its Redis slot is then free unless another process holds
		// it. The local slot is held until the attempt is recorded (or its
		// Redis slot released), after the Redis one is given back.
		waitStart = time.Now()
		release := d.local.acquire(ctx, r, d.cfg.SlotLocalWait)
		if release == nil {
			if ctx.Err() != nil {
				return Result{}, fmt.Errorf("delivery interrupted: %w", context.Cause(ctx))
			}
			return d.busy(), nil
		}
		defer release()
	}
	now := d.cfg.Now()
	a, err := d.store.begin(ctx, r, now, d.cfg.BreakerThreshold, d.cfg.BreakerCooldown, d.slots)
	if err != nil {
		return Result{}, err
	}
	if a.verdict == "busy" && d.local != nil {
		// Other processes hold the endpoint's slots: look once more after
		// a short pause, if the bound allows, before postponing.
		if pause := min(d.cfg.SlotLocalWait-time.Since(waitStart), busyPause); pause > 0 && sleepCtx(ctx, pause) {
			now = d.cfg.Now()
			if a, err = d.store.begin(ctx, r, now, d.cfg.BreakerThreshold, d.cfg.BreakerCooldown, d.slots); err != nil {
				return Result{}, err
			}
		}
	}
	switch a.verdict {
	case "ok":
	case "early":
		return Result{Outcome: Postpone, Delay: a.until.Sub(now), Status: DeliveryPending, Err: errors.New("not due yet")}, nil
	case "open":
		wait := a.until.Sub(now)
		// Spread the endpoint's waiting deliveries over a tenth of the wait.
		wait += rand.N(wait/10 + 1)
		return Result{Outcome: Postpone, Delay: wait, Status: DeliveryPending, Err: errors.New("the endpoint's breaker is open")}, nil
	case "busy":
		return d.busy(), nil
	case "rate":
		// The endpoint's max_per_second is spent: back when it allows one.
		return Result{Outcome: Postpone, Delay: max(a.until.Sub(now), time.Millisecond), Status: DeliveryPending, Err: ErrEndpointRateLimited}, nil
	case "held":
		return Result{Outcome: Done, Status: DeliveryHeld}, nil
	case "deleted":
		return Result{Outcome: Done, Status: DeliveryFailed}, nil
	case "gone":
		return Result{Outcome: Done}, nil
	default: // delivered, failed
		return Result{Outcome: Done, Status: a.verdict}, nil
	}

	att, retryAfter := d.tracedPost(ctx, r, a, now)
	if ctx.Err() != nil {
		d.releaseSlot(ctx, r)
		return Result{}, fmt.Errorf("delivery interrupted: %w", context.Cause(ctx))
	}
	made := a.attempts + 1
	o := outcome{attempt: att, disableMsg: d.disableMsg}
	var delay time.Duration
	switch {
	case att.Error == "":
		o.kind = DeliveryDelivered
	case att.StatusCode == http.StatusGone:
		o.kind = "gone"
	case made >= a.limit:
		o.kind = DeliveryFailed
	default:
		o.kind = "retry"
		delay = d.retryDelay(made)
		if retryAfter > 0 {
			delay = retryAfter
			o.openUntil = now.Add(retryAfter)
		}
		o.next = now.Add(delay)
	}
	status, err := d.store.finish(context.WithoutCancel(ctx), r, d.cfg.Now(), o, d.breaker)
	if err != nil {
		d.releaseSlot(ctx, r)
		return Result{}, err
	}
	d.cfg.Metrics.ObserveWebhookAttempt(o.kind, attemptLatency(att))
	res := Result{Status: status}
	if att.Error != "" {
		res.Err = errors.New(att.Error)
	}
	switch status {
	case DeliveryPending:
		res.Outcome, res.Delay = Retry, max(delay, 0)
	case DeliveryFailed:
		res.Outcome = Exhausted
	default: // delivered, held
		res.Outcome = Done
	}
	return res, nil
}

// busyPause is the pause before a delivery that found its endpoint's Redis
// slots held by other processes looks once more.
const busyPause = 10 * time.Millisecond

// busy postpones a delivery that found its endpoint's slots all taken: it
// looks again soon, spread so that the waiting deliveries do not come back
// together; the queue backs off further on each return.
func (d *Deliverer) busy() Result {
	wait := d.cfg.SlotWait + rand.N(d.cfg.SlotWait/2+1)
	return Result{Outcome: Postpone, Delay: wait, Status: DeliveryPending, Err: ErrEndpointBusy}
}

// sleepCtx waits for d, or less if ctx ends first; it says whether the
// whole wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// releaseSlot gives back the slot of an attempt that could not be
// recorded. Should Redis not answer, the slot expires by itself.
func (d *Deliverer) releaseSlot(ctx context.Context, r Ref) {
	if d.slots.max == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := d.store.releaseSlot(ctx, r); err != nil {
		d.cfg.Logger.WarnContext(ctx, "webhook delivery slot not released; it expires by itself", "delivery_id", r.DeliveryID, "tenant", r.Tenant, "err", err)
	}
}

// retryDelay is the wait after the made-th attempt, with jitter.
func (d *Deliverer) retryDelay(made int) time.Duration {
	i := min(max(made-1, 0), len(d.cfg.Schedule)-1)
	w := d.cfg.Schedule[i]
	if d.cfg.Jitter > 0 && w > 0 {
		f := 1 + d.cfg.Jitter*(2*rand.Float64()-1)
		w = time.Duration(float64(w) * f)
	}
	return w
}

// post signs one attempt, hands it to the sender of the URL's scheme, and
// describes it. retryAfter is set when the receiver asked for a wait.
func (d *Deliverer) post(ctx context.Context, r Ref, a *attempt, now time.Time) (att Attempt, retryAfter time.Duration) {
	att.At = now.UTC()
	u, err := d.cfg.Guard.parse(a.url)
	if err != nil {
		att.Error = err.Error()
		return att, 0
	}
	m := &Message{ID: r.EventID, Body: a.body, Timestamp: d.cfg.Now()}
	if isBrokerScheme(u.Scheme) {
		m.Type = eventType(a.body) // the default routing key
	}
	m.Header = Headers(r.EventID, m.Timestamp, a.body, a.secrets...)
	m.Header.Set("Content-Type", "application/json")
	injectTrace(ctx, m.Header) // traceparent of the attempt's span

	start := time.Now()
	sent := d.senderFor(u.Scheme).Send(ctx, u, m)
	att.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	att.StatusCode, att.Response, att.ResponseTruncated = sent.StatusCode, sent.Response, sent.ResponseTruncated
	att.Error = redactURL(sent.Err, u)
	return att, sent.RetryAfter
}
