package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/orders"
)

// Portfolio is what the saga needs of the portfolio service.
type Portfolio interface {
	// Reserve holds funds; downstream.ErrInsufficientFunds when refused.
	Reserve(ctx context.Context, r downstream.Reservation) error
	// Release frees a reservation; releasing an unknown one is no error.
	Release(ctx context.Context, r downstream.ReleaseRequest) error
}

// Execution is what the saga needs of the execution service.
type Execution interface {
	// Execute fills the order; downstream.ErrRefused when refused.
	Execute(ctx context.Context, r downstream.ExecutionRequest) (downstream.Fill, error)
}

// Reasons an order ends without being executed.
const (
	ReasonInsufficientFunds     = "insufficient_funds"
	ReasonUnknownAccount        = "unknown_account"
	ReasonRiskLimit             = "risk_limit"
	ReasonExecutionRefused      = "execution_refused"
	ReasonRetriesExhausted      = "retries_exhausted"
	ReasonDeadlineExceeded      = "deadline_exceeded"
	ReasonDownstreamUnavailable = "downstream_unavailable"
	ReasonCancelled             = "cancelled_by_client"
	ReasonInternal              = "internal_error"
)

// SagaConfig configures a Saga.
type SagaConfig struct {
	// LeaseTTL is how long a handler owns an order without writing. Each
	// step renews it. It must exceed the longest downstream call budget.
	// Defaults to 30s.
	LeaseTTL time.Duration
	// MarketPrice is the price estimate a market order reserves funds at.
	// Defaults to 100.
	MarketPrice float64
	// MaxNotional is the risk limit: larger orders are rejected. Defaults to 1e9.
	MaxNotional float64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnTerminal is called after an order reaches a terminal status.
	OnTerminalFunc func(ctx context.Context, o *orders.Order)
	// RetryBase and RetryMax shape the jittered exponential backoff of
	// failed attempts. Default to 1s and 2m.
	RetryBase, RetryMax time.Duration
	// QueueLag is how late past its delay a retried or postponed task
	// may start: the worker's WorkerConfig.DelayedPollInterval. An order
	// whose next attempt would start past its deadline, counting this
	// lag, is compensated now. Defaults to 1s.
	QueueLag time.Duration
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// Metrics receives step and terminal-status measurements. Defaults to none.
	Metrics Metrics
}

func (c SagaConfig) withDefaults() SagaConfig {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 30 * time.Second
	}
	if c.MarketPrice == 0 {
		c.MarketPrice = 100
	}
	if c.MaxNotional == 0 {
		c.MaxNotional = 1e9
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = 2 * time.Minute
	}
	if c.QueueLag == 0 {
		c.QueueLag = time.Second
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
	return c
}

// Saga runs orders: the process and compensate task handlers.
type Saga struct {
	store     *orders.Store
	portfolio Portfolio
	execution Execution
	enq       *Enqueuer
	cfg       SagaConfig
	log       *slog.Logger
	metrics   Metrics
}

// NewSaga returns a saga.
func NewSaga(store *orders.Store, p Portfolio, e Execution, enq *Enqueuer, cfg SagaConfig) *Saga {
	cfg = cfg.withDefaults()
	return &Saga{store: store, portfolio: p, execution: e, enq: enq, cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics}
}

// Postponed is returned by handlers that wait for something (a lease, an
// open breaker) rather than fail: the task runs again after Delay without
// spending its retry budget.
type Postponed struct {
	Delay time.Duration
	Err   error
}

func (p *Postponed) Error() string { return fmt.Sprintf("postponed %s: %v", p.Delay, p.Err) }
func (p *Postponed) Unwrap() error { return p.Err }

// errCompensate: the order must be rolled back rather than advanced.
var errCompensate = errors.New("compensation requested")

// ProcessTask is the order:process handler.
func (s *Saga) ProcessTask(ctx context.Context, t *asynq.Task) error {
	p, err := decodePayload(t)
	if err != nil {
		return err
	}
	log := s.log.With("order_id", p.ID, "tenant", p.Tenant, "task_type", t.Type())
	if n, ok := asynq.GetRetryCount(ctx); ok {
		log = log.With("attempt", n+1)
	}
	// The lease script also validates a pending order (the risk check
	// needs nothing but the order): one round trip for two steps.
	start := time.Now()
	l, err := s.store.AcquireValidate(ctx, p.Tenant, p.ID, s.cfg.LeaseTTL, orders.Risk{MarketPrice: s.cfg.MarketPrice, MaxNotional: s.cfg.MaxNotional})
	switch {
	case errors.Is(err, orders.ErrNotFound):
		log.WarnContext(ctx, "task for an unknown order dropped")
		return nil
	case errors.Is(err, orders.ErrTerminal):
		return nil
	case errors.Is(err, orders.ErrLeaseHeld):
		return &Postponed{Delay: leaseWait(l.Until), Err: err}
	case err != nil:
		return err
	}
	defer s.releaseLease(ctx, l)
	if l.Validated {
		s.validated(ctx, l, start)
	}

	if l.Compensation != "" || l.Order.CancelRequested {
		return s.enq.EnqueueCompensation(ctx, p.Tenant, p.ID, t.Headers())
	}
	if s.cfg.Now().After(l.Order.Deadline) {
		return s.compensate(ctx, t, p, ReasonDeadlineExceeded)
	}

	err = s.advance(ctx, l, log)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, orders.ErrFenced):
		log.WarnContext(ctx, "lease taken over by another worker; stopping")
		return nil
	case errors.Is(err, errCompensate), errors.Is(err, orders.ErrCompensate):
		return s.enq.EnqueueCompensation(ctx, p.Tenant, p.ID, t.Headers())
	case permanent(err):
		log.ErrorContext(ctx, "order failed permanently", "err", err)
		if cerr := s.compensate(ctx, t, p, ReasonInternal); cerr != nil {
			return cerr
		}
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	default:
		// Downstream hiccups, Redis away for a moment: try again.
		return s.transient(ctx, t, p, l, err, log)
	}
}

// validated reports the validate step AcquireValidate made, which
// started at start: its metric, and its span as tracedStep would have
// made it (the span of the lease script that did it).
func (s *Saga) validated(ctx context.Context, l *orders.Lease, start time.Time) {
	s.observeStep(orders.Pending, l.Order, nil, start)
	_, span := tracer().Start(ctx, stepName(orders.Pending), trace.WithTimestamp(start))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("asyncgate.order.id", l.ID), attribute.String("asyncgate.tenant", l.Tenant),
			attribute.String("asyncgate.order.status", string(l.Order.Status)))
	}
	span.End()
}

// permanent reports whether retrying err cannot help: a downstream
// rejecting our request as malformed (4xx other than 408/429), or a state
// the machine does not allow. Anything else is worth retrying.
func permanent(err error) bool {
	if se, ok := errors.AsType[*downstream.StatusError](err); ok {
		return se.Code >= 400 && se.Code < 500 && se.Code != 408 && se.Code != 429
	}
	return errors.Is(err, orders.ErrInvalidTransition)
}

// transient decides between postponing, retrying and giving up.
func (s *Saga) transient(ctx context.Context, t *asynq.Task, p payload, l *orders.Lease, err error, log *slog.Logger) error {
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if retried >= maxRetry {
		// Asynq archives the task whatever we return: compensate now.
		log.ErrorContext(ctx, "order out of retries", "err", err)
		if cerr := s.compensate(ctx, t, p, ReasonRetriesExhausted); cerr != nil {
			return cerr
		}
		return err
	}
	if d, ok := downstream.Postpone(err); ok {
		// An open breaker or a full bulkhead: nothing was called. Wait for the next probe or
		// a free slot without spending a retry, unless the order would come back (with
		// some slack for the queue) past its deadline.
		now := s.cfg.Now()
		d = wholeSecond(now, d)
		if now.Add(d + time.Second + s.cfg.QueueLag).After(l.Order.Deadline) {
			return s.compensate(ctx, t, p, ReasonDownstreamUnavailable)
		}
		log.DebugContext(ctx, "downstream unavailable; order postponed", "delay", d, "err", err)
		return &Postponed{Delay: d, Err: err}
	}
	if next := s.cfg.Now().Add(backoff(s.cfg.RetryBase, s.cfg.RetryMax, retried)/2 + s.cfg.QueueLag); next.After(l.Order.Deadline) {
		return s.compensate(ctx, t, p, ReasonDownstreamUnavailable)
	}
	log.WarnContext(ctx, "order step failed; will retry", "err", err)
	return err
}

// compensate records the reason and enqueues the compensation task.
func (s *Saga) compensate(ctx context.Context, t *asynq.Task, p payload, reason string) error {
	err := s.store.RequestCompensation(ctx, p.Tenant, p.ID, reason)
	if errors.Is(err, orders.ErrTerminal) {
		return nil
	}
	if err != nil {
		return err
	}
	return s.enq.EnqueueCompensation(ctx, p.Tenant, p.ID, t.Headers())
}

// advance runs the remaining steps of the order, each in its own span.
func (s *Saga) advance(ctx context.Context, l *orders.Lease, log *slog.Logger) error {
	for !l.Order.Status.Terminal() {
		from, start := l.Order.Status, time.Now()
		err := s.tracedStep(ctx, l, log)
		s.observeStep(from, l.Order, err, start)
		if err != nil {
			return err
		}
	}
	s.ended(ctx, l.Order, log)
	return nil
}

// step moves the order one status on: validate, reserve funds or execute.
func (s *Saga) step(ctx context.Context, l *orders.Lease, log *slog.Logger) error {
	o := l.Order
	var c orders.Change
	switch o.Status {
	case orders.Pending:
		c = orders.Change{To: orders.Validated}
		if o.Notional(s.cfg.MarketPrice) > s.cfg.MaxNotional {
			c = orders.Change{To: orders.Rejected, Reason: ReasonRiskLimit}
		}
	case orders.Validated:
		err := s.portfolio.Reserve(ctx, downstream.Reservation{
			Tenant: l.Tenant, OrderID: o.ID, ID: o.ID, AccountID: o.AccountID, Amount: o.Notional(s.cfg.MarketPrice)})
		switch {
		case errors.Is(err, downstream.ErrInsufficientFunds):
			c = orders.Change{To: orders.Rejected, Reason: ReasonInsufficientFunds}
		case errors.Is(err, downstream.ErrUnknownAccount):
			// Accounts belong to tenants: this tenant has none of that id.
			c = orders.Change{To: orders.Rejected, Reason: ReasonUnknownAccount}
		case err != nil:
			return fmt.Errorf("reserve funds: %w", err)
		default:
			// The point of no return is marked in the same script
			// (unless a cancel came first): the next step calls Execute
			// at once.
			c = orders.Change{To: orders.FundsReserved, BeginExecute: true}
		}
	case orders.FundsReserved:
		if !l.Executing {
			// Not marked by the funds_reserved transition: a cancel or
			// compensation came first (ErrCompensate), or this lease took
			// over an order left funds_reserved, or execution was taken
			// back after an unprocessed attempt.
			if err := s.store.BeginExecute(ctx, l); err != nil {
				return err
			}
		}
		fill, err := s.execution.Execute(ctx, executionRequest(l.Tenant, o))
		switch {
		case downstream.Unprocessed(err):
			// Nothing was executed: the order may still be cancelled or
			// compensated without asking the execution service again.
			if eerr := s.store.EndExecute(ctx, l); eerr != nil {
				return eerr
			}
			return fmt.Errorf("execute: %w", err)
		case errors.Is(err, downstream.ErrRefused):
			if err := s.store.RequestCompensation(ctx, l.Tenant, l.ID, ReasonExecutionRefused); err != nil {
				return err
			}
			return errCompensate
		case err != nil:
			return fmt.Errorf("execute: %w", err)
		}
		c = orders.Change{To: orders.Executed, Fill: toFill(fill)}
	default:
		return fmt.Errorf("%w: unexpected status %s", orders.ErrInvalidTransition, o.Status)
	}
	c.Extend = s.cfg.LeaseTTL
	if err := s.store.Transition(ctx, l, c); err != nil {
		return err
	}
	log.DebugContext(ctx, "order step done", "status", c.To)
	return nil
}

func (s *Saga) ended(ctx context.Context, o *orders.Order, log *slog.Logger) {
	log.InfoContext(ctx, "order ended", "status", o.Status, "reason", o.Reason)
	s.metrics.OrderEnded(o.Status)
	if s.cfg.OnTerminalFunc != nil {
		s.cfg.OnTerminalFunc(ctx, o)
	}
}

// executionRequest asks for o to be executed. The execution id is the order id: order ids
// are UUIDv7 minted by the gateway, unique across tenants, and the service scopes its
// idempotency keys by tenant besides.
func executionRequest(tenant string, o *orders.Order) downstream.ExecutionRequest {
	return downstream.ExecutionRequest{Tenant: tenant, OrderID: o.ID, ID: o.ID, AccountID: o.AccountID, Symbol: o.Symbol, Side: string(o.Side), Quantity: o.Quantity, LimitPrice: o.LimitPrice}
}

// releaseRequest releases the reservation of an order, whose id is the order id.
func releaseRequest(tenant, orderID string) downstream.ReleaseRequest {
	return downstream.ReleaseRequest{Tenant: tenant, OrderID: orderID, ReservationID: orderID}
}

func toFill(f downstream.Fill) *orders.Fill {
	return &orders.Fill{ExecutionID: f.ExecutionID, Price: f.Price, Quantity: f.Quantity, FilledAt: f.FilledAt}
}

// CompensateTask is the order:compensate handler: it releases what the order
// holds and ends it cancelled or failed. When execution had begun, it first
// asks the (idempotent) execution service again: a fill ends the order
// executed, since funds of an executed order must not be released.
func (s *Saga) CompensateTask(ctx context.Context, t *asynq.Task) error {
	p, err := decodePayload(t)
	if err != nil {
		return err
	}
	log := s.log.With("order_id", p.ID, "tenant", p.Tenant, "task_type", t.Type())
	l, err := s.store.Acquire(ctx, p.Tenant, p.ID, s.cfg.LeaseTTL)
	switch {
	case errors.Is(err, orders.ErrNotFound), errors.Is(err, orders.ErrTerminal):
		return nil
	case errors.Is(err, orders.ErrLeaseHeld):
		return &Postponed{Delay: leaseWait(l.Until), Err: err}
	case err != nil:
		return err
	}
	defer s.releaseLease(ctx, l)
	// A rollback must not be cut short by the caller going away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.LeaseTTL)
	defer cancel()

	o := l.Order
	reason := l.Compensation
	to := orders.Failed
	if o.CancelRequested && !l.Executing {
		to, reason = orders.Cancelled, ReasonCancelled
	}
	if reason == "" {
		reason = ReasonInternal
	}
	if l.Executing {
		fill, err := s.execution.Execute(ctx, executionRequest(l.Tenant, o))
		switch {
		case err == nil:
			if err := s.store.Transition(ctx, l, orders.Change{To: orders.Executed, Fill: toFill(fill)}); err != nil {
				return err
			}
			s.ended(ctx, l.Order, log)
			return nil
		case errors.Is(err, downstream.ErrRefused):
			if reason != ReasonExecutionRefused && l.Compensation == "" {
				reason = ReasonExecutionRefused
			}
		default:
			return s.retryable(err)
		}
	}
	change := orders.Change{To: to, Reason: reason}
	if o.Status == orders.Validated || o.Status == orders.FundsReserved {
		// A reserve call may have been in flight from the validated state:
		// release is idempotent and harmless when nothing was reserved.
		// Should the portfolio be away, the order still ends now and the
		// release is owed: a release task retries it until it succeeds.
		if err := s.portfolio.Release(ctx, releaseRequest(l.Tenant, o.ID)); err != nil {
			log.WarnContext(ctx, "release failed; the order ends and the release is retried", "err", err)
			change.ReleasePending = true
		}
	}
	if err := s.store.Transition(ctx, l, change); err != nil {
		if errors.Is(err, orders.ErrFenced) {
			return nil
		}
		return err
	}
	s.ended(ctx, l.Order, log)
	if change.ReleasePending {
		return s.enq.EnqueueRelease(ctx, p.Tenant, p.ID, t.Headers())
	}
	return nil
}

// ReleaseTask is the order:release handler: it releases the funds of an
// order that ended while the portfolio service was away.
func (s *Saga) ReleaseTask(ctx context.Context, t *asynq.Task) error {
	p, err := decodePayload(t)
	if err != nil {
		return err
	}
	if err := s.portfolio.Release(ctx, releaseRequest(p.Tenant, p.ID)); err != nil {
		return s.retryable(fmt.Errorf("release funds: %w", err))
	}
	return s.store.ReleaseDone(ctx, p.Tenant, p.ID)
}

// retryable maps a downstream error of compensation to a task result:
// an open breaker or a full bulkhead postpones, anything else retries.
func (s *Saga) retryable(err error) error {
	if d, ok := downstream.Postpone(err); ok {
		return &Postponed{Delay: wholeSecond(s.cfg.Now(), d), Err: err}
	}
	return err
}

// RetryDelay is the Asynq RetryDelayFunc: a postponement's own delay, else
// jittered exponential backoff between RetryBase and RetryMax.
func (s *Saga) RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var p *Postponed
	if errors.As(err, &p) {
		return max1ms(p.Delay)
	}
	return jitteredBackoff(s.cfg.RetryBase, s.cfg.RetryMax, n)
}

// jitteredBackoff is backoff(base, max, n) with jitter over its upper half: [d/2, d].
func jitteredBackoff(base, max time.Duration, n int) time.Duration {
	d := backoff(base, max, n)
	return max1ms(d/2 + rand.N(d/2+1))
}

// backoff is base·2ⁿ capped at max.
func backoff(base, max time.Duration, n int) time.Duration {
	d := base << min(n, 30)
	if d > max || d <= 0 {
		d = max
	}
	return d
}

// wholeSecond rounds a wait up so that it ends on a whole second: Asynq keeps
// retry times in whole seconds (it truncates them), and a task that came back
// early (before the breaker lets a probe through, before a delivery is due)
// would only be postponed again.
func wholeSecond(now time.Time, d time.Duration) time.Duration {
	at := now.Add(max1ms(d))
	if r := at.Truncate(time.Second); !r.Equal(at) {
		at = r.Add(time.Second)
	}
	return at.Sub(now)
}

func max1ms(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return time.Millisecond
	}
	return d
}

// IsFailure is the Asynq IsFailure func: postponements are not failures.
func IsFailure(err error) bool {
	var p *Postponed
	return err != nil && !errors.As(err, &p)
}

// leaseWait is how long to wait for a held lease: until it expires, but at
// most leaseRecheck, since a live holder usually releases it much sooner.
func leaseWait(until time.Time) time.Duration {
	return min(time.Until(until)+10*time.Millisecond, leaseRecheck)
}

const leaseRecheck = 250 * time.Millisecond

// releaseLease gives the lease back, unless the order ended: the terminal
// transition already dropped it, and a round trip per order is saved.
func (s *Saga) releaseLease(ctx context.Context, l *orders.Lease) {
	if l.Order != nil && l.Order.Status.Terminal() {
		return
	}
	s.store.Release(context.WithoutCancel(ctx), l)
}
