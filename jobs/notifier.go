package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/asyncgate/asyncgate/internal/human"
	"github.com/asyncgate/asyncgate/orders"
	"github.com/asyncgate/asyncgate/webhooks"
)

// Webhook task types, on the shards of QueueWebhooks: a fan-out on its
// order's, a delivery on its delivery id's.
const (
	// TypeWebhookFanout turns an order's terminal change into an event and
	// its deliveries. TaskID "fan:<order id>:<seq>".
	TypeWebhookFanout = "webhook:fanout"
	// TypeWebhookDeliver makes the attempts of one delivery. TaskID: the
	// delivery id.
	TypeWebhookDeliver = "webhook:deliver"
)

// fanoutTaskID is the TaskID of the fan-out of change seq of an order.
func fanoutTaskID(orderID string, seq int64) string {
	return "fan:" + orderID + ":" + strconv.FormatInt(seq, 10)
}

// NotifierConfig configures a Notifier.
type NotifierConfig struct {
	// FanoutMaxRetry is the retry budget of a fan-out task. Defaults to 1000.
	FanoutMaxRetry int
	// DeliverMaxRetry is Asynq's retry cap of a delivery task, only a
	// safety net: a delivery ends when its own attempt budget
	// (webhooks.StoreConfig.MaxAttempts) is spent, and postponements (an
	// open breaker) spend neither. Defaults to 10000.
	DeliverMaxRetry int
	// TaskTimeout bounds a fan-out task. A delivery task gets the
	// deliverer's timeout and 15s more. Defaults to 60s.
	TaskTimeout time.Duration
	// RetryBase and RetryMax shape the backoff of tasks that failed on our
	// side (Redis away) rather than at the receiver. Default to 1s and 1m.
	RetryBase, RetryMax time.Duration
	// Batch is how many outbox entries of a tenant one reconciler pass
	// looks at. Defaults to 1000.
	Batch int
	// Shards is the number of webhooks queues (--queue-shards). Defaults to
	// DefaultQueueShards.
	Shards int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c NotifierConfig) withDefaults() NotifierConfig {
	if c.FanoutMaxRetry == 0 {
		c.FanoutMaxRetry = 1000
	}
	if c.DeliverMaxRetry == 0 {
		c.DeliverMaxRetry = 10000
	}
	if c.TaskTimeout == 0 {
		c.TaskTimeout = 60 * time.Second
	}
	c.Shards = shardsOrDefault(c.Shards)
	if c.RetryBase == 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax == 0 {
		c.RetryMax = time.Minute
	}
	if c.Batch == 0 {
		c.Batch = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Notifier sends orders' terminal events as webhooks, on Asynq:
//
//   - OnTerminal, the saga's hook, enqueues the fan-out right after an
//     order ends (the fast path). The order store recorded the end in the
//     tenant's outbox in the same script as the change itself, so should
//     the process die before the enqueue, RedriveOutbox, run by the
//     reconciler, enqueues it later (the slow path).
//   - FanoutTask stores the event (its id derived from the order and the
//     change, so a retry makes the same one) and one delivery per target,
//     enqueues one delivery task per delivery (TaskID: the delivery id),
//     then clears the outbox entry.
//   - DeliverTask makes one attempt (webhooks.Deliverer) and maps its
//     Result onto Asynq: a failure retries on the delivery's schedule, an
//     open breaker postpones without spending an attempt, the last failure
//     archives the task (the dead-letter queue).
//   - Redeliver and EnableEndpoint start deliveries again on request,
//     including from the archive.
type Notifier struct {
	orders    *orders.Store
	hooks     *webhooks.Store
	deliverer *webhooks.Deliverer
	client    *asynq.Client
	insp      *asynq.Inspector
	cfg       NotifierConfig
	log       *slog.Logger
}

// NewNotifier returns a notifier.
func NewNotifier(store *orders.Store, hooks *webhooks.Store, deliverer *webhooks.Deliverer, client *asynq.Client, insp *asynq.Inspector, cfg NotifierConfig) *Notifier {
	cfg = cfg.withDefaults()
	return &Notifier{orders: store, hooks: hooks, deliverer: deliverer, client: client, insp: insp, cfg: cfg, log: cfg.Logger}
}

// fanoutQueue is the queue of the order's fan-outs.
func (n *Notifier) fanoutQueue(orderID string) string {
	return QueueFor(QueueWebhooks, orderID, n.cfg.Shards)
}

// DeliveryQueue is the queue of the delivery's task.
func (n *Notifier) DeliveryQueue(deliveryID string) string {
	return QueueFor(QueueWebhooks, deliveryID, n.cfg.Shards)
}

// Register adds the webhook handlers and their retry delays to w.
func (n *Notifier) Register(w *Worker) {
	w.Mux.HandleFunc(TypeWebhookFanout, tracedTask("webhook.fanout", n.FanoutTask))
	w.Mux.HandleFunc(TypeWebhookDeliver, n.DeliverTask)
	w.SetRetryDelay(TypeWebhookFanout, n.RetryDelay)
	w.SetRetryDelay(TypeWebhookDeliver, n.RetryDelay)
	w.Mux.HandleFunc(TypeWebhookRecover, tracedTask("webhook.recover", n.RecoverTask))
	w.SetRetryDelay(TypeWebhookRecover, n.RetryDelay)
}

type fanoutPayload struct {
	Tenant string `json:"t"`
	ID     string `json:"id"`
	Seq    int64  `json:"seq"`
}

// OnTerminal is the saga's OnTerminalFunc: it enqueues the order's fan-out.
// A failure is only logged: the outbox entry stays, and the reconciler
// enqueues the fan-out later.
func (n *Notifier) OnTerminal(ctx context.Context, o *orders.Order) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if o.CallbackURL == "" {
		// Most orders of a tenant without endpoints: the event is stored
		// for the feed and the outbox entry cleared in one round trip,
		// instead of a fan-out task. Anything else (an endpoint, an
		// event too large, an error) takes the fan-out.
		if ev, err := eventOf(o, o.Version); err == nil {
			if done, err := n.hooks.PublishUnsubscribed(ctx, o.Tenant, ev, n.orders.OutboxKey(o.Tenant), o.ID); err == nil && done {
				return
			}
		}
	}
	if err := n.EnqueueFanout(ctx, o.Tenant, o.ID, o.Version); err != nil {
		n.log.WarnContext(ctx, "enqueue webhook fan-out failed; the reconciler will", "order_id", o.ID, "tenant", o.Tenant, "err", err)
	}
}

// EnqueueFanout enqueues the fan-out of change seq of the order. One that
// is already queued is not an error.
func (n *Notifier) EnqueueFanout(ctx context.Context, tenant, id string, seq int64) error {
	b, _ := json.Marshal(fanoutPayload{tenant, id, seq})
	return send(ctx, n.client, message{TypeWebhookFanout, n.fanoutQueue(id), fanoutTaskID(id, seq), tenant, id}, b, nil,
		asynq.MaxRetry(n.cfg.FanoutMaxRetry), asynq.Timeout(n.cfg.TaskTimeout))
}

// EnqueueDelivery enqueues the delivery task of r. One that is already
// queued (or running, or waiting to retry) is not an error: it will run.
func (n *Notifier) EnqueueDelivery(ctx context.Context, r webhooks.Ref) error {
	b, _ := json.Marshal(r)
	timeout := 30 * time.Second
	if n.deliverer != nil {
		timeout = n.deliverer.Timeout() + 15*time.Second
	}
	return send(ctx, n.client, message{TypeWebhookDeliver, n.DeliveryQueue(r.DeliveryID), r.DeliveryID, r.Tenant, r.OrderID}, b, nil,
		asynq.MaxRetry(n.cfg.DeliverMaxRetry), asynq.Timeout(timeout))
}

// FanoutTask is the webhook:fanout handler.
func (n *Notifier) FanoutTask(ctx context.Context, t *asynq.Task) error {
	var p fanoutPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil || p.Tenant == "" || p.ID == "" {
		return fmt.Errorf("decode %s payload: %w", t.Type(), errors.Join(err, asynq.SkipRetry))
	}
	o, err := n.orders.Get(ctx, p.Tenant, p.ID)
	if errors.Is(err, orders.ErrNotFound) {
		n.log.WarnContext(ctx, "fan-out for an unknown order dropped", "order_id", p.ID, "tenant", p.Tenant)
		return n.orders.OutboxDone(ctx, p.Tenant, p.ID)
	}
	if err != nil {
		return err
	}
	if !o.Status.Terminal() {
		return fmt.Errorf("fan-out of order %s, which is %s: %w", p.ID, o.Status, asynq.SkipRetry)
	}
	if p.Seq == 0 {
		p.Seq = o.Version
	}
	refs, err := n.publish(ctx, o, p.Seq)
	if err != nil {
		return err
	}
	for _, r := range refs {
		r.OrderID = o.ID
		if err := n.EnqueueDelivery(ctx, r); err != nil {
			return err // the retry publishes nothing new and enqueues what is missing
		}
	}
	return n.orders.OutboxDone(ctx, p.Tenant, p.ID)
}

// publish stores the event of the order's change seq with its deliveries.
func (n *Notifier) publish(ctx context.Context, o *orders.Order, seq int64) ([]webhooks.Ref, error) {
	ev, err := eventOf(o, seq)
	if err != nil {
		return nil, err
	}
	refs, err := n.hooks.Publish(ctx, o.Tenant, ev, o.CallbackURL)
	if errors.Is(err, webhooks.ErrEventTooLarge) && len(o.Metadata) > 0 {
		// Only the metadata can make an order this large: send it without.
		n.log.WarnContext(ctx, "webhook event too large; sent without the order's metadata", "order_id", o.ID, "tenant", o.Tenant)
		slim := *o
		slim.Metadata = nil
		ev.Data, _ = json.Marshal(&slim)
		refs, err = n.hooks.Publish(ctx, o.Tenant, ev, o.CallbackURL)
	}
	if errors.Is(err, webhooks.ErrEventTooLarge) {
		return nil, fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return refs, err
}

// eventOf is the event of the order's change seq, the order as it stands.
func eventOf(o *orders.Order, seq int64) (*webhooks.Event, error) {
	ev := &webhooks.Event{
		ID: webhooks.EventID(o.Tenant, o.ID, seq), Type: string(orders.StatusEvent(o.Status)),
		CreatedAt: o.UpdatedAt, Sequence: seq,
	}
	var err error
	if ev.Data, err = json.Marshal(o); err != nil {
		return nil, fmt.Errorf("encode order: %w", err)
	}
	return ev, nil
}

// retryIn is a failed delivery attempt whose next try is due after Delay,
// as the delivery's schedule or the receiver's Retry-After says.
type retryIn struct {
	Delay time.Duration
	Err   error
}

func (r *retryIn) Error() string {
	return "retry in " + human.Duration(r.Delay) + ": " + errString(r.Err)
}
func (r *retryIn) Unwrap() error { return r.Err }

// DeliverTask is the webhook:deliver handler.
func (n *Notifier) DeliverTask(ctx context.Context, t *asynq.Task) error {
	var r webhooks.Ref
	if err := json.Unmarshal(t.Payload(), &r); err != nil || r.Tenant == "" || r.DeliveryID == "" || r.EventID == "" {
		return fmt.Errorf("decode %s payload: %w", t.Type(), errors.Join(err, asynq.SkipRetry))
	}
	if n.deliverer == nil {
		return fmt.Errorf("no webhook deliverer in this process: %w", asynq.SkipRetry)
	}
	res, err := n.deliverer.Deliver(ctx, r)
	if err != nil {
		return n.archived(ctx, r, err)
	}
	// The delivery's logger is made only for a line that is written: most
	// deliveries succeed at once and log nothing.
	log := func() *slog.Logger {
		l := n.log.With("delivery_id", r.DeliveryID, "event_id", r.EventID, "tenant", r.Tenant, "task_type", t.Type())
		if r.OrderID != "" {
			l = l.With("order_id", r.OrderID)
		}
		return l
	}
	switch res.Outcome {
	case webhooks.Retry:
		log().InfoContext(ctx, "webhook attempt failed; will retry", "delay", res.Delay, "err", res.Err)
		return n.archived(ctx, r, &retryIn{Delay: res.Delay, Err: res.Err})
	case webhooks.Postpone:
		return n.archived(ctx, r, &Postponed{Delay: res.Delay, Err: res.Err})
	case webhooks.Exhausted:
		log().WarnContext(ctx, "webhook delivery failed: last attempt spent; archived", "err", res.Err)
		return fmt.Errorf("webhook delivery %s: last attempt failed: %w: %w", r.DeliveryID, res.Err, asynq.SkipRetry)
	}
	if n.log.Enabled(ctx, slog.LevelDebug) {
		log().DebugContext(ctx, "webhook delivery done", "status", res.Status)
	}
	return nil
}

// RetryDelay is the Asynq RetryDelayFunc of webhook tasks: the wait the
// attempt asked for, else jittered exponential backoff.
func (n *Notifier) RetryDelay(count int, err error, _ *asynq.Task) time.Duration {
	if p, ok := errors.AsType[*Postponed](err); ok {
		if errors.Is(p.Err, webhooks.ErrEndpointBusy) {
			// Its endpoint's slots are taken (a slow receiver): each
			// return waits longer, up to 8 times the first wait, so a
			// long backlog looks rarely and the slots stay full.
			return wholeSecond(time.Now(), jitteredBackoff(p.Delay, 8*p.Delay, count))
		}
		return wholeSecond(time.Now(), p.Delay)
	}
	if r, ok := errors.AsType[*retryIn](err); ok {
		return wholeSecond(time.Now(), r.Delay)
	}
	return jitteredBackoff(n.cfg.RetryBase, n.cfg.RetryMax, count)
}

// Redeliver makes the tenant's delivery due now, with at least one attempt
// left, and runs its task: it moves an archived, retrying or scheduled task
// to the queue, or enqueues a new one. It returns the delivery as it then
// stands, or webhooks.ErrDeliveryNotFound, webhooks.ErrEndpointNotFound
// (its endpoint was deleted), webhooks.ErrEndpointDisabled.
func (n *Notifier) Redeliver(ctx context.Context, tenant, id string) (*webhooks.Delivery, error) {
	r, err := n.hooks.PrepareRedelivery(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	if err := n.run(ctx, r); err != nil {
		return nil, err
	}
	return n.hooks.Delivery(ctx, tenant, id)
}

// EnableEndpoint enables the tenant's endpoint and redelivers what was held
// while it was disabled. webhooks.ErrEndpointNotFound.
func (n *Notifier) EnableEndpoint(ctx context.Context, tenant, id string) (*webhooks.Endpoint, error) {
	ep, held, err := n.hooks.EnableEndpoint(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	for _, did := range held {
		r, err := n.hooks.PrepareRedelivery(ctx, tenant, did)
		if errors.Is(err, webhooks.ErrDeliveryNotFound) {
			continue // expired
		}
		if err != nil {
			return nil, err // enabling again resumes the rest
		}
		if err := n.run(ctx, r); err != nil {
			return nil, err
		}
	}
	return ep, nil
}

// run makes the delivery task of r run now, whatever state it is in.
func (n *Notifier) run(ctx context.Context, r webhooks.Ref) error {
	queue := n.DeliveryQueue(r.DeliveryID)
	for range 3 { // the task may change state under us; look again
		state, err := taskState(n.insp, queue, r.DeliveryID)
		if err != nil {
			return err
		}
		switch state {
		case asynq.TaskStatePending, asynq.TaskStateActive:
			return nil
		case 0:
			return n.EnqueueDelivery(ctx, r)
		case asynq.TaskStateCompleted:
			err = n.insp.DeleteTask(queue, r.DeliveryID)
		default: // archived, retry, scheduled
			err = n.insp.RunTask(queue, r.DeliveryID)
			if err == nil {
				return nil
			}
		}
		if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			n.log.DebugContext(ctx, "redelivery raced the task; looking again", "delivery_id", r.DeliveryID, "err", err)
		}
	}
	return fmt.Errorf("redeliver %s: its task keeps changing state", r.DeliveryID)
}

// RedriveOutbox enqueues the fan-out of the tenant's ended orders still in
// the outbox since before the given time, whose fan-out task vanished or
// was archived: the slow path behind OnTerminal. It is the reconciler's
// OutboxFunc.
func (n *Notifier) RedriveOutbox(ctx context.Context, tenant string, before time.Time) (int, error) {
	ids, err := n.orders.Outbox(ctx, tenant, before, n.cfg.Batch)
	if err != nil {
		return 0, err
	}
	count := 0
	for _, id := range ids {
		o, err := n.orders.Get(ctx, tenant, id)
		if errors.Is(err, orders.ErrNotFound) {
			if err := n.orders.OutboxDone(ctx, tenant, id); err != nil {
				return count, err
			}
			continue
		}
		if err != nil {
			return count, err
		}
		taskID := fanoutTaskID(id, o.Version)
		queue := n.fanoutQueue(id)
		state, err := taskState(n.insp, queue, taskID)
		if err != nil {
			return count, err
		}
		switch state {
		case asynq.TaskStateArchived:
			err = n.insp.RunTask(queue, taskID)
		case 0, asynq.TaskStateCompleted:
			err = n.EnqueueFanout(ctx, tenant, id, o.Version)
		default:
			continue // on its way
		}
		if err != nil {
			return count, err
		}
		count++
	}
	return count, nil
}

// taskState is the task's state, or 0 when no such task exists.
func taskState(insp *asynq.Inspector, queue, id string) (asynq.TaskState, error) {
	info, err := insp.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return info.State, nil
}
