package jobs

// Asynq's Redis layout (release AsynqLayoutVersion), for the keys
// asyncgate reads or writes itself: the worker's gate (decision 73), the
// never-leased resume (85), the order's task written by the API (88) and
// the retirement of old shards (96). Every key of queue q carries q's hash
// tag, so a queue is one slot.

// allQueuesKey is Asynq's set of every queue that ever had a task.
const allQueuesKey = "asynq:queues"

// Suffixes of a queue's keys (asynqKey); the gate kinds of idle.go are
// the first key of the script they gate.
const (
	gPending   = ":pending"
	gScheduled = ":scheduled"
	gRetry     = ":retry"
	gCompleted = ":completed"
	gLease     = ":lease"
	gAggSets   = ":aggregation_sets"
)

// asynqKey is the key of queue q with suffix (one of the g* suffixes,
// ":active", ...).
func asynqKey(q, suffix string) string { return "asynq:{" + q + "}" + suffix }

// pendingKey is Asynq's pending list of queue q.
func pendingKey(q string) string { return asynqKey(q, gPending) }

// asynqTaskKey is Asynq's hash of task id in queue q, whose "state" field
// is the task's state ("active" once dequeued).
func asynqTaskKey(q, id string) string { return asynqKey(q, ":t:"+id) }

// taskKeys are the keys of Asynq's queue q that hold its tasks in some
// state (pending, active, scheduled, retry, archived, completed, leased,
// grouped) or mark it paused: when none exists, q holds no task and no
// one paused it. They share q's hash tag (one slot).
func taskKeys(q string) []string {
	keys := make([]string, 0, 9)
	for _, s := range []string{gPending, ":active", gScheduled, gRetry, ":archived", gCompleted, gLease, ":groups", ":paused"} {
		keys = append(keys, asynqKey(q, s))
	}
	return keys
}
