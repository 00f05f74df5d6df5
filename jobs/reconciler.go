package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/orders"
)

// ReconcilerConfig configures a Reconciler.
type ReconcilerConfig struct {
	// Interval between passes. Defaults to 15s.
	Interval time.Duration
	// Grace is how old an in-flight order must be before its missing task
	// counts as lost (the API enqueues right after storing). Defaults to 10s.
	Grace time.Duration
	// Batch is how many orders of a tenant one pass looks at. Defaults to 1000.
	Batch int
	// LeaseCheck is how often in-flight orders whose lease expired while
	// their task is still active (the worker holding it died) are looked
	// for and resumed by another worker (ResumeStale), without waiting for
	// Asynq's recoverer (its lease of 30 s, then a pass every minute). An
	// order held by a dead worker resumes within about SagaConfig.LeaseTTL
	// + LeaseCheck. Defaults to 5s.
	LeaseCheck time.Duration
	// ResumeAfter is how long an order may stay pending with no lease
	// while its process task is active before it is resumed: the worker
	// that dequeued the task died (or lost its Redis master) before the
	// lease script ran, so no lease expires for LeaseCheck to see, and
	// Asynq would give the task back only after its own lease and a
	// recoverer pass (60 to 120 s). Checked with the leases, every
	// LeaseCheck (decision 85). Defaults to 30s (--resume-after).
	ResumeAfter time.Duration
	// LockKey is the Redis key that makes one process at a time reconcile.
	// Defaults to "ag:reconciler:lock".
	LockKey string
	// OutboxFunc, when set, re-drives the tenant's ended orders whose
	// webhook fan-out is still pending since before the given time (the
	// fast path was lost), and returns how many it re-drove.
	OutboxFunc func(ctx context.Context, tenant string, before time.Time) (int, error)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c ReconcilerConfig) withDefaults() ReconcilerConfig {
	if c.Interval == 0 {
		c.Interval = 15 * time.Second
	}
	if c.Grace == 0 {
		c.Grace = 10 * time.Second
	}
	if c.Batch == 0 {
		c.Batch = 1000
	}
	if c.LeaseCheck == 0 {
		c.LeaseCheck = 5 * time.Second
	}
	if c.ResumeAfter == 0 {
		c.ResumeAfter = 30 * time.Second
	}
	if c.LockKey == "" {
		c.LockKey = "ag:reconciler:lock"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Reconciler finds in-flight orders whose task vanished, was archived, or
// whose deadline passed, and puts them back on track.
type Reconciler struct {
	store *orders.Store
	insp  *asynq.Inspector
	enq   *Enqueuer
	rdb   redis.UniversalClient
	cfg   ReconcilerConfig
	// token is the value of the pass lock this reconciler takes: one per
	// reconciler (per process), so that a lock whose release failed (its
	// master was down at the end of the pass) is taken again by the same
	// reconciler on its next pass instead of holding every pass off until
	// it expires (decision 86).
	token string
	// passing makes RunLocked one pass at a time within the process (the
	// token alone would let two of its calls both hold the lock).
	passing sync.Mutex
}

// NewReconciler returns a reconciler.
func NewReconciler(store *orders.Store, insp *asynq.Inspector, enq *Enqueuer, cfg ReconcilerConfig) *Reconciler {
	return &Reconciler{store: store, insp: insp, enq: enq, rdb: store.Client(), cfg: cfg.withDefaults(), token: uuid.NewString()}
}

// ReconcileStats counts what one pass did.
type ReconcileStats struct {
	Checked, Requeued, Compensated, Releases, Outbox int
}

// Run reconciles every Interval until ctx ends, whenever this process holds
// the lock, and resumes orders held by dead workers every LeaseCheck.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	leases := time.NewTicker(r.cfg.LeaseCheck)
	defer leases.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leases.C:
			if n, err := r.ResumeStaleLocked(ctx); err != nil {
				r.cfg.Logger.WarnContext(ctx, "resume orders of dead workers", "err", err)
			} else if n > 0 {
				r.cfg.Logger.InfoContext(ctx, "resumed orders held by a dead worker", "resumed", n)
			}
			continue
		case <-t.C:
		}
		st, ran, err := r.RunLocked(ctx)
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "reconcile pass failed", "err", err)
		} else if ran && (st.Requeued > 0 || st.Compensated > 0) {
			r.cfg.Logger.InfoContext(ctx, "reconciled orders", "checked", st.Checked, "requeued", st.Requeued, "compensated", st.Compensated)
		}
	}
}

var unlockScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// lockScript takes the pass lock for ARGV[1] for ARGV[2] ms: free, or
// already ARGV[1]'s (left by a pass whose release failed).
var lockScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`)

// RunLocked runs one pass if no other process is running one.
func (r *Reconciler) RunLocked(ctx context.Context) (ReconcileStats, bool, error) {
	if !r.passing.TryLock() {
		return ReconcileStats{}, false, nil
	}
	defer r.passing.Unlock()
	ttl := 3*r.cfg.Interval + time.Minute
	ok, err := lockScript.Run(ctx, r.rdb, []string{r.cfg.LockKey}, r.token, ttl.Milliseconds()).Bool()
	if err != nil || !ok {
		return ReconcileStats{}, false, err
	}
	defer unlockScript.Run(context.WithoutCancel(ctx), r.rdb, []string{r.cfg.LockKey}, r.token)
	st, err := r.RunOnce(ctx)
	return st, true, err
}

// RunOnce makes one pass over every tenant's in-flight orders.
func (r *Reconciler) RunOnce(ctx context.Context) (ReconcileStats, error) {
	var st ReconcileStats
	tenants, err := r.store.Tenants(ctx)
	if err != nil {
		return st, fmt.Errorf("reconcile: %w", err)
	}
	now := r.cfg.Now()
	for _, tenant := range tenants {
		ids, err := r.store.InFlight(ctx, tenant, now.Add(-r.cfg.Grace), r.cfg.Batch)
		if err != nil {
			return st, fmt.Errorf("reconcile %s: %w", tenant, err)
		}
		for _, id := range ids {
			st.Checked++
			if err := r.reconcile(ctx, tenant, id, now, &st); err != nil {
				return st, fmt.Errorf("reconcile %s/%s: %w", tenant, id, err)
			}
		}
		if r.cfg.OutboxFunc != nil {
			n, err := r.cfg.OutboxFunc(ctx, tenant, now.Add(-r.cfg.Grace))
			st.Outbox += n
			if err != nil {
				return st, fmt.Errorf("reconcile %s outbox: %w", tenant, err)
			}
		}
		rel, err := r.store.PendingReleases(ctx, tenant, now.Add(-r.cfg.Grace), r.cfg.Batch)
		if err != nil {
			return st, fmt.Errorf("reconcile %s releases: %w", tenant, err)
		}
		for _, id := range rel {
			if err := r.ensureTask(ctx, QueueCritical, id, releaseTaskID(id), func() error { return r.enq.EnqueueRelease(ctx, tenant, id, nil) }, &st.Releases); err != nil {
				return st, fmt.Errorf("reconcile %s/%s release: %w", tenant, id, err)
			}
		}
	}
	return st, nil
}

// ensureTask makes sure the order's task of kind exists (in its shard,
// or in the shard of a former shard count) and is not archived.
func (r *Reconciler) ensureTask(ctx context.Context, kind, orderID, id string, enqueue func() error, count *int) error {
	queue, state, err := r.findTask(ctx, kind, orderID, id)
	if err != nil {
		return err
	}
	switch state {
	case asynq.TaskStateArchived:
		*count++
		return r.insp.RunTask(queue, id)
	case 0, asynq.TaskStateCompleted:
		*count++
		return enqueue()
	}
	return nil
}

func (r *Reconciler) reconcile(ctx context.Context, tenant, id string, now time.Time, st *ReconcileStats) error {
	c, err := r.store.Control(ctx, tenant, id)
	if errors.Is(err, orders.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Status.Terminal() {
		return nil
	}
	_, state, err := r.findTask(ctx, QueueOrders, id, id)
	if err != nil {
		return err
	}
	reason := c.Compensation
	switch {
	case reason != "" || c.Cancel:
	case now.After(c.Deadline):
		reason = ReasonDeadlineExceeded
	case state == asynq.TaskStateArchived:
		reason = ReasonRetriesExhausted
	case state == 0 || state == asynq.TaskStateCompleted:
		// The status was read before the task: a saga that ended in
		// between removed its task after writing its terminal status, so
		// read the status again, now after the task, before calling the
		// task lost.
		again, err := r.store.Control(ctx, tenant, id)
		if err != nil || again.Status.Terminal() {
			return ignoreNotFound(err)
		}
		st.Requeued++
		return r.enq.EnqueueOrder(ctx, tenant, id, nil)
	default:
		return nil // its task is on its way
	}
	if reason != "" && c.Compensation == "" {
		if err := r.store.RequestCompensation(ctx, tenant, id, reason); err != nil && !errors.Is(err, orders.ErrTerminal) {
			return err
		}
	}
	return r.ensureTask(ctx, QueueCritical, id, compensationTaskID(id), func() error { return r.enq.EnqueueCompensation(ctx, tenant, id, nil) }, &st.Compensated)
}

// ResumeStaleLocked runs ResumeStale unless another process did within
// LeaseCheck: the lock is left to expire, so the processes share the work.
func (r *Reconciler) ResumeStaleLocked(ctx context.Context) (int, error) {
	ok, err := r.rdb.SetNX(ctx, r.cfg.LockKey+":leases", uuid.NewString(), r.cfg.LeaseCheck*9/10).Result()
	if err != nil || !ok {
		return 0, err
	}
	return r.ResumeStale(ctx)
}

// ResumeStale enqueues a resume task (Enqueuer.EnqueueResume) for each
// in-flight order whose lease expired while its order or compensation task
// is still active: the worker running it died, and Asynq would give the
// task back only after its own lease and its recoverer's next pass (30 to
// 90 s). It does the same for orders that never got a lease although their
// task is active (resumeUnleased). It returns how many it resumed.
func (r *Reconciler) ResumeStale(ctx context.Context) (int, error) {
	tenants, err := r.store.Tenants(ctx)
	if err != nil {
		return 0, fmt.Errorf("resume stale: %w", err)
	}
	n := 0
	for _, tenant := range tenants {
		now := r.cfg.Now()
		stale, unleased, err := r.store.LeaseScan(ctx, tenant, now, now.Add(-r.cfg.ResumeAfter), r.cfg.Batch)
		if err != nil {
			return n, fmt.Errorf("resume stale %s: %w", tenant, err)
		}
		for id, leaseEnd := range stale {
			for _, t := range []struct {
				kind, taskID string
				compensate   bool
			}{{QueueOrders, id, false}, {QueueCritical, compensationTaskID(id), true}} {
				_, state, err := r.findTask(ctx, t.kind, id, t.taskID)
				if err != nil {
					return n, err
				}
				if state != asynq.TaskStateActive {
					continue
				}
				if err := r.enq.EnqueueResume(ctx, tenant, id, t.compensate, leaseEnd); err != nil {
					return n, fmt.Errorf("resume %s/%s: %w", tenant, id, err)
				}
				n++
			}
		}
		m, err := r.resumeUnleased(ctx, tenant, unleased)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// resumeUnleased enqueues a resume task (Enqueuer.EnqueueResumePending)
// for each of the tenant's orders ids (still pending with no lease
// ResumeAfter after its creation: Store.LeaseScan) whose process task is
// active in Asynq: a worker
// dequeued it and died (or its master did) before the lease script ran.
// A task still pending, scheduled or retrying is left alone: a deep
// backlog is not worked twice. The pass costs, when there are any, one
// pipeline of their tasks' states, read from the order's shard under the current count (a
// task of another layout, during a change of --queue-shards, is left to
// Asynq's recoverer).
func (r *Reconciler) resumeUnleased(ctx context.Context, tenant string, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	states := make([]*redis.StringCmd, len(ids))
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			states[i] = p.HGet(ctx, asynqTaskKey(r.enq.Queue(QueueOrders, id), id), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("resume pending %s: task states: %w", tenant, err)
	}
	n := 0
	for i, id := range ids {
		if states[i].Val() != "active" {
			continue
		}
		if err := r.enq.EnqueueResumePending(ctx, tenant, id); err != nil {
			return n, fmt.Errorf("resume pending %s/%s: %w", tenant, id, err)
		}
		n++
	}
	return n, nil
}

// findTask looks the order's task of kind up in the order's shard and,
// when it is not there, in the order's shard under the other shard counts
// a rollout may have left tasks in (decision 74): one shard (the queues
// of before sharding) and the most shards Asynq's queue set shows. It
// returns the queue it found the task in (the current shard when none)
// and the task's state, 0 when there is no such task. A task in an older
// layout that this misses is enqueued again in the current one: the
// duplicate is harmless (the saga's writes are fenced by the order's
// lease, downstream calls are idempotent), only wasted work.
func (r *Reconciler) findTask(ctx context.Context, kind, orderID, taskID string) (string, asynq.TaskState, error) {
	n := r.enq.Shards()
	queue := QueueFor(kind, orderID, n)
	state, err := r.taskState(queue, taskID)
	if err != nil || state != 0 {
		return queue, state, err
	}
	seen, err := SeenShards(ctx, r.rdb)
	if err != nil {
		return queue, 0, err
	}
	tried := map[string]bool{queue: true}
	for _, m := range []int{1, seen} {
		q := QueueFor(kind, orderID, max(m, 1))
		if tried[q] {
			continue
		}
		tried[q] = true
		st, err := r.taskState(q, taskID)
		if err != nil || st != 0 {
			return q, st, err
		}
	}
	return queue, 0, nil
}

// taskState is the task's state, or 0 when no such task exists.
func (r *Reconciler) taskState(queue, id string) (asynq.TaskState, error) {
	info, err := r.insp.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return info.State, nil
}

func ignoreNotFound(err error) error {
	if errors.Is(err, orders.ErrNotFound) {
		return nil
	}
	return err
}
