// Package jobs runs orders in the background on Asynq.
//
// # Tasks
//
// Each accepted order gets one order:process task on its shard of the
// "orders" queue (see [ShardQueue]: --queue-shards queues per kind, the
// shard of the order id's hash) whose TaskID is the order id. Its handler, [Saga.ProcessTask], advances the order
// step by step (validate → reserve funds → execute) and checkpoints each step
// in the order store, so a retry resumes after the last completed step.
// Rolling back (releasing funds, ending the order failed or cancelled) is an
// order:compensate task on the order's shard of the high-priority
// "critical" queue.
//
// # Idle cost
//
// A worker's Asynq servers run scripts per queue (dequeue, forwarder,
// janitor, recoverer); with 48 queues that is hundreds a second. A hook on
// their Redis client answers the scripts of queues whose keys do not exist
// and waits for work on the queues' lists instead of polling (idle.go,
// decisions 57 and 73).
//
// # Safety
//
// Asynq delivers at least once and may start a retry while a timed-out
// handler still runs. Every handler therefore takes the order's lease first;
// the lease's fencing token is checked by the same script that writes the
// order, so a stale handler cannot overwrite newer progress. Downstream calls
// carry the order id as their idempotency key, so a repeated call does
// nothing twice.
//
// # Retries
//
// Transient errors (timeouts, 5xx) are retried with jittered exponential
// backoff; business refusals never are. Waiting for a lease, for an open
// breaker's next probe or for a free bulkhead slot is a postponement, which
// does not spend the retry budget (the call reached nothing).
// When the budget or the order's deadline runs out, the order is compensated
// and ends failed, and the task goes to the archive.
//
// # Reconciliation
//
// Asynq's TaskID deduplicates only while the task exists. The order store is
// the record of truth: the [Reconciler], run by one process at a time, finds
// in-flight orders whose task vanished or was archived, and enqueues them
// again or compensates them.
//
// # Webhooks
//
// An order's terminal change also records it in its tenant's outbox, in
// the same script. The [Notifier] enqueues a webhook:fanout task right after
// (the saga's OnTerminalFunc); the reconciler re-drives outbox entries whose
// fan-out was lost. The fan-out stores the event and its deliveries
// (package webhooks) and enqueues one webhook:deliver task per delivery,
// whose TaskID is the delivery id, on its shard of the "webhooks" queue
// (the delivery id's hash). Failed
// attempts retry on the delivery's own schedule (the worker's retry delay
// dispatches on the task type), an endpoint's open breaker postpones
// without spending an attempt, and the last failure archives the task,
// from where a redelivery runs it again.
package jobs
