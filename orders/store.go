package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Errors of the store.
var (
	// ErrNotFound: no such order for this tenant.
	ErrNotFound = errors.New("order not found")
	// ErrDuplicateClientOrderID: the tenant already used this client_order_id.
	ErrDuplicateClientOrderID = errors.New("client_order_id already used")
	// ErrInvalidTransition: the state machine forbids the change, or the order moved on meanwhile.
	ErrInvalidTransition = errors.New("invalid status transition")
	// ErrFenced: the caller's lease was taken over by another worker; it must stop writing.
	ErrFenced = errors.New("lease lost to another worker")
	// ErrLeaseHeld: another worker holds the order's lease.
	ErrLeaseHeld = errors.New("order lease held by another worker")
	// ErrTerminal: the order has reached a terminal status.
	ErrTerminal = errors.New("order is terminal")
	// ErrTooLate: the order is executing; it can no longer be cancelled.
	ErrTooLate = errors.New("order is already executing")
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// Prefix starts every key. Defaults to "ag:".
	Prefix string
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
	// PollInterval is how often WaitForChange re-reads the order in case an
	// announcement was lost (or every wake-up, with no Watcher). Defaults to 1s.
	PollInterval time.Duration
}

// Store keeps orders and their event logs in Redis.
type Store struct {
	rdb     redis.UniversalClient
	k       keys
	now     func() time.Time
	poll    time.Duration
	seen    tenantCache
	watcher atomic.Pointer[Watcher]
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg StoreConfig) *Store {
	if cfg.Prefix == "" {
		cfg.Prefix = "ag:"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	return &Store{rdb: rdb, k: keys{cfg.Prefix}, now: cfg.Now, poll: cfg.PollInterval}
}

// Client is the store's Redis client.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// ChangedChannel is the pub/sub channel on which every change is announced as "tenant/id".
func (s *Store) ChangedChannel() string { return s.k.changed() }

const luaTerminal = `local terminal = {executed=true, rejected=true, failed=true, cancelled=true}
`

// createScript stores the order (KEYS[1..6], ARGV[1..5]) and, given a
// seventh key, binds it to the order in the same run (see Binding): the
// key goes from ARGV[6] (or nothing) to ARGV[7] for ARGV[8] ms. The third
// value of the answer is "1" when the key is bound, else "0".
var createScript = redis.NewScript(`
local function bind()
  if #KEYS < 7 then return '0' end
  local cur = redis.call('GET', KEYS[7])
  if cur == ARGV[7] then return '1' end
  if cur and cur ~= ARGV[6] then return '0' end
  redis.call('SET', KEYS[7], ARGV[7], 'PX', ARGV[8])
  return '1'
end
if ARGV[5] ~= '' then
  local ex = redis.call('HGET', KEYS[6], ARGV[5])
  if ex and ex ~= ARGV[1] then return {'dup', ex, '0'} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- The same call again (the client retried after losing the reply): done already.
  if redis.call('HGET', KEYS[1], 'doc') == ARGV[2] then return {'ok', ARGV[1], bind()} end
  return {'exists', ARGV[1], '0'}
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[6], ARGV[5], ARGV[1]) end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'status', 'pending', 'seq', 1, 'fence', 0)
redis.call('RPUSH', KEYS[2], '{"seq":1' .. string.sub(ARGV[3], 9))
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
return {'ok', ARGV[1], bind()}
`)

// Binding ties a key of the caller's (the API's idempotency key) to the
// order CreateBound stores, in the same script, so that no crash can leave
// the order without the key that names it. The store writes the values and
// never reads them: the key goes from Claim (or from not existing) to
// Value, for TTL. A key that holds anything else (another request took it)
// is left alone. Key must carry the tenant's hash tag (keys.go).
type Binding struct {
	Key   string
	Claim string
	Value string
	TTL   time.Duration
}

// eventJSON encodes e with seq 0; the scripts splice in the real sequence
// number, which only Redis knows (cancel requests append concurrently).
func eventJSON(e Event) string {
	e.Seq = 0
	b, _ := json.Marshal(e) // an Event always encodes
	return string(b)
}

func docJSON(o *Order) string {
	b, _ := json.Marshal(o) // an Order always encodes
	return string(b)
}

// Create stores a new pending order and its order.created event. o.ID,
// o.Tenant, o.CreatedAt and o.Deadline must be set. With a client_order_id
// already used by the tenant it returns ErrDuplicateClientOrderID and the
// existing order.
func (s *Store) Create(ctx context.Context, o *Order) (*Order, error) {
	created, _, err := s.CreateBound(ctx, o, Binding{})
	return created, err
}

// CreateBound is Create that, with b.Key set, also binds b.Key to the new
// order in the same script (see Binding). bound reports whether b.Key now
// holds b.Value; it is false for a duplicate client_order_id.
func (s *Store) CreateBound(ctx context.Context, o *Order, b Binding) (created *Order, bound bool, err error) {
	created, bound, _, err = s.CreateRiding(ctx, o, b, nil)
	return created, bound, err
}

// Rider is another package's write that goes with an order's create
// (the API's Asynq task of the order, decision 88): CreateRiding sends its
// commands in the pipeline of the create script, after it, so that both
// cost one round trip (and, under appendfsync always, one fsync).
type Rider interface {
	// Queue adds the rider's commands to p. With eval its scripts go as
	// EVAL (their text): Redis lost them (NOSCRIPT) on the first try, and
	// the whole pipeline is sent again.
	Queue(ctx context.Context, p redis.Pipeliner, eval bool)
	// Settle is called once, last, also when the commands were never
	// sent. undo is true when the create answered that it stored nothing
	// for a new order (a duplicate client_order_id): the rider undoes its
	// write. On an error the create's outcome is unknown (the order may
	// be stored) and undo is false. Settle returns the write's error, or
	// with undo the undoing's.
	Settle(ctx context.Context, undo bool) error
}

// CreateRiding is CreateBound with r's commands sent in the create
// script's pipeline, after the script; rideErr is r.Settle's. On one Redis
// (a client, failover or not) the pipeline runs on one connection, in
// order, so r's writes happen after the create, whatever its outcome (a
// duplicate client_order_id included: r.Settle is told to undo). On a
// Redis Cluster, where a pipeline runs the nodes' parts concurrently, r is
// sent after the create answered, and only when it stored the order (two
// round trips, as without a rider). A nil r is CreateBound.
func (s *Store) CreateRiding(ctx context.Context, o *Order, b Binding, r Rider) (created *Order, bound bool, rideErr, err error) {
	dup := false
	if r != nil {
		defer func() { rideErr = r.Settle(ctx, dup) }()
	}
	o.Status = Pending
	o.UpdatedAt = o.CreatedAt
	o.Version = 1
	// The order.created event carries the order as stored: encode it once
	// and splice it in (Order is the event's last non-empty field).
	doc := docJSON(o)
	head := eventJSON(Event{Type: EventCreated, At: o.CreatedAt, Status: Pending})
	ev := head[:len(head)-1] + `,"order":` + doc + `}`
	t := o.Tenant
	keys := []string{s.k.order(t, o.ID), s.k.events(t, o.ID), s.k.index(t), s.k.statusIndex(t, Pending), s.k.active(t), s.k.clientIDs(t)}
	args := []any{o.ID, doc, ev, o.CreatedAt.UnixMilli(), o.ClientOrderID}
	if b.Key != "" {
		keys = append(keys, b.Key)
		args = append(args, b.Claim, b.Value, max(1, b.TTL.Milliseconds()))
	}
	if !s.seen.has(t) {
		// First order of this tenant seen by this process: register the
		// tenant for the reconciler (idempotent, once per process).
		if err := s.rdb.SAdd(ctx, s.k.tenants(), t).Err(); err != nil {
			return nil, false, nil, fmt.Errorf("create order: register tenant: %w", err)
		}
		s.seen.add(t)
	}
	var res []string
	if _, cluster := s.rdb.(*redis.ClusterClient); r == nil || cluster {
		res, err = createScript.Run(ctx, s.rdb, keys, args...).StringSlice()
		if err == nil && res[0] == "ok" && r != nil {
			s.ride(ctx, r)
		}
	} else {
		res, err = s.createPiped(ctx, keys, args, r)
	}
	if err != nil {
		return nil, false, nil, fmt.Errorf("create order: %w", err)
	}
	switch res[0] {
	case "ok":
		return o, res[2] == "1", nil, nil
	case "dup":
		dup = true
		existing, err := s.Get(ctx, t, res[1])
		if err != nil {
			return nil, false, nil, fmt.Errorf("create order: read duplicate: %w", err)
		}
		return existing, false, nil, ErrDuplicateClientOrderID
	default:
		return nil, false, nil, fmt.Errorf("create order: id %s exists", o.ID)
	}
}

// createPiped runs the create script and then r's commands in one
// pipeline. Scripts go as EVALSHA; when Redis has lost one (NOSCRIPT:
// restarted, failed over, SCRIPT FLUSH) the pipeline is sent again with
// their text. The create script is idempotent for the same order (its
// "same call again" case), and r must be for its own write, so sending
// both again is safe.
func (s *Store) createPiped(ctx context.Context, keys []string, args []any, r Rider) ([]string, error) {
	for _, eval := range []bool{false, true} {
		pipe := s.rdb.Pipeline()
		var c *redis.Cmd
		if eval {
			c = createScript.Eval(ctx, pipe, keys, args...)
		} else {
			c = createScript.EvalSha(ctx, pipe, keys, args...)
		}
		r.Queue(ctx, pipe, eval)
		cmds, _ := pipe.Exec(ctx) // each command's answer is read on its own
		if !eval && slices.ContainsFunc(cmds, noScript) {
			continue
		}
		return c.StringSlice()
	}
	panic("unreachable")
}

// ride sends r's commands alone (r.Settle reads their answers), again as
// EVAL after a NOSCRIPT.
func (s *Store) ride(ctx context.Context, r Rider) {
	for _, eval := range []bool{false, true} {
		pipe := s.rdb.Pipeline()
		r.Queue(ctx, pipe, eval)
		if cmds, _ := pipe.Exec(ctx); eval || !slices.ContainsFunc(cmds, noScript) {
			return
		}
	}
}

func noScript(c redis.Cmder) bool { return isNoScript(c.Err()) }

func isNoScript(err error) bool {
	return err != nil && strings.Contains(err.Error(), "NOSCRIPT")
}

// Get returns the tenant's order id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Order, error) {
	h, err := s.rdb.HMGet(ctx, s.k.order(tenant, id), "doc", "status", "seq", "cancel").Result()
	if err != nil {
		return nil, fmt.Errorf("get order: %w", err)
	}
	return decodeOrder(tenant, h)
}

// decodeOrder merges the hash fields doc, status, seq, cancel into an Order.
func decodeOrder(tenant string, h []any) (*Order, error) {
	doc, _ := h[0].(string)
	if doc == "" {
		return nil, ErrNotFound
	}
	var o Order
	if err := json.Unmarshal([]byte(doc), &o); err != nil {
		return nil, fmt.Errorf("decode order: %w", err)
	}
	o.Tenant = tenant
	if st, ok := h[1].(string); ok {
		o.Status = Status(st)
	}
	if seq, ok := h[2].(string); ok {
		o.Version, _ = strconv.ParseInt(seq, 10, 64)
	}
	o.CancelRequested = h[3] == "1" && !o.Status.Terminal()
	return &o, nil
}

// Events returns the order's log, oldest first.
func (s *Store) Events(ctx context.Context, tenant, id string) ([]Event, error) {
	raw, err := s.rdb.LRange(ctx, s.k.events(tenant, id), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	if len(raw) == 0 {
		return nil, ErrNotFound
	}
	evs := make([]Event, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal([]byte(r), &evs[i]); err != nil {
			return nil, fmt.Errorf("decode event %d: %w", i, err)
		}
	}
	return evs, nil
}

// ListParams select a page of orders.
type ListParams struct {
	// Status filters by current status; empty means all.
	Status Status
	// After is the cursor: the last id of the previous page.
	After string
	// Limit is the page size. Defaults to 50.
	Limit int
}

// List returns the tenant's orders, newest first, and the cursor of the
// next page ("" at the end).
func (s *Store) List(ctx context.Context, tenant string, p ListParams) ([]*Order, string, error) {
	if p.Limit <= 0 {
		p.Limit = 50
	}
	key := s.k.index(tenant)
	if p.Status != "" {
		key = s.k.statusIndex(tenant, p.Status)
	}
	max := "+"
	if p.After != "" {
		max = "(" + p.After
	}
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: max, Stop: "-", ByLex: true, Rev: true, Count: int64(p.Limit + 1)}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list orders: %w", err)
	}
	next := ""
	if len(ids) > p.Limit {
		ids = ids[:p.Limit]
		next = ids[len(ids)-1]
	}
	refs := make([]orderRef, len(ids))
	for i, id := range ids {
		refs[i] = orderRef{tenant, id}
	}
	out, err := s.readOrders(ctx, refs, p.Status)
	if err != nil {
		return nil, "", fmt.Errorf("list orders: %w", err)
	}
	return out, next, nil
}

// orderRef names an order of a tenant.
type orderRef struct{ tenant, id string }

// readOrders reads the orders of refs in one pipeline, in refs' order,
// leaving out those gone and, with a status, those no longer in it (moved
// on since their ids were read).
func (s *Store) readOrders(ctx context.Context, refs []orderRef, status Status) ([]*Order, error) {
	cmds := make([]*redis.SliceCmd, len(refs))
	_, err := s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = pl.HMGet(ctx, s.k.order(r.tenant, r.id), "doc", "status", "seq", "cancel")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Order, 0, len(refs))
	for i, c := range cmds {
		o, err := decodeOrder(refs[i].tenant, c.Val())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if status != "" && o.Status != status {
			continue
		}
		out = append(out, o)
	}
	return out, nil
}

var requestCancelScript = redis.NewScript(luaTerminal + `
local h = redis.call('HMGET', KEYS[1], 'status', 'exec', 'cancel')
if not h[1] then return {'notfound'} end
if h[1] == 'cancelled' then return {'ok', h[1]} end
if terminal[h[1]] then return {'terminal', h[1]} end
if h[2] == '1' then return {'executing', h[1]} end
if h[3] == '1' then return {'ok', h[1]} end
redis.call('HSET', KEYS[1], 'cancel', '1')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[2], '{"seq":' .. seq .. string.sub(ARGV[1], 9))
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'ok', h[1]}
`)

// RequestCancel records that the client wants the order cancelled. It returns
// ErrTerminal (with the order) when the order already ended other than
// cancelled, ErrTooLate when execution has begun, ErrNotFound. Carrying the
// cancel out (releasing funds) is the worker's job.
func (s *Store) RequestCancel(ctx context.Context, tenant, id string) error {
	ev := Event{Type: EventCancelRequested, At: s.now()}
	res, err := requestCancelScript.Run(ctx, s.rdb, []string{s.k.order(tenant, id), s.k.events(tenant, id)},
		eventJSON(ev), s.k.changed(), tenant+"/"+id).StringSlice()
	if err != nil {
		return fmt.Errorf("request cancel: %w", err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "notfound":
		return ErrNotFound
	case "executing":
		return ErrTooLate
	default:
		return fmt.Errorf("%w: %s", ErrTerminal, res[1])
	}
}

// Tenants lists every tenant that has placed an order.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	return s.rdb.SMembers(ctx, s.k.tenants()).Result()
}

// InFlight returns up to limit ids of the tenant's orders that are not terminal
// and were created before the given time, oldest first.
func (s *Store) InFlight(ctx context.Context, tenant string, createdBefore time.Time, limit int) ([]string, error) {
	return s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.k.active(tenant), Start: "-inf", Stop: strconv.FormatInt(createdBefore.UnixMilli(), 10),
		ByScore: true, Count: int64(limit),
	}).Result()
}

// tenantCache remembers tenants already registered in ag:tenants.
type tenantCache struct {
	m sync.Map
}

func (c *tenantCache) has(t string) bool { _, ok := c.m.Load(t); return ok }
func (c *tenantCache) add(t string)      { c.m.Store(t, struct{}{}) }
