package orders

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Lease is a worker's exclusive right to advance one order. Its Token is a
// fencing token: every write made under the lease is checked against the
// order's current token in the same script, so a stale worker whose lease
// was taken over cannot overwrite the newer worker's progress.
type Lease struct {
	Tenant, ID string
	Token      int64
	Until      time.Time
	// Order is the order as it was when the lease was taken.
	Order *Order
	// Executing is set once execution began: the point of no return.
	Executing bool
	// Compensation is the reason compensation was requested, if it was.
	Compensation string
	// Validated is set when AcquireValidate moved the order from pending
	// to validated.
	Validated bool
}

var acquireScript = redis.NewScript(luaTerminal + `
local h = redis.call('HMGET', KEYS[1], 'status', 'lease', 'doc', 'seq', 'cancel', 'comp', 'exec', 'owner', 'fence')
if not h[1] then return {'notfound'} end
if terminal[h[1]] then return {'terminal', h[1], h[3], h[4]} end
if h[2] and tonumber(h[2]) > tonumber(ARGV[1]) then
  -- Our own acquire again (the client retried after losing the reply).
  if h[8] == ARGV[3] then return {'ok', h[9], h[3], h[4], h[5] or '', h[6] or '', h[7] or '', h[1], '0'} end
  return {'held', h[2]}
end
local f = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'lease', ARGV[2], 'owner', ARGV[3])
local st, doc, seq, validated = h[1], h[3], h[4], '0'
-- Validate (AcquireValidate): a pending order, nothing asked of it, within
-- the risk limit, moves to validated under the new lease, as Transition
-- would: the doc's tail (status, updated_at, version; Go writes it in this
-- order, after every field a client sets) is rewritten, the event appended,
-- the indexes moved, the change announced. Anything unexpected leaves the
-- order pending, for the caller's own Transition.
if ARGV[4] == '1' and st == 'pending' and not h[5] and not h[6] then
  local ok, o = pcall(cjson.decode, doc)
  if ok and type(o) == 'table' and type(o.quantity) == 'number' then
    local price = tonumber(ARGV[5])
    if o.type == 'limit' and type(o.limit_price) == 'number' then price = o.limit_price end
    local head, mid, tail = string.match(doc, '^(.*"status":)"pending"(,"created_at":"[^"]*","updated_at":)"[^"]*"(,"deadline":"[^"]*","version":)%d+}$')
    if head and o.quantity * price <= tonumber(ARGV[6]) then
      seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
      doc = head .. '"validated"' .. mid .. ARGV[7] .. tail .. seq .. '}'
      st, validated = 'validated', '1'
      redis.call('HSET', KEYS[1], 'doc', doc, 'status', st)
      redis.call('RPUSH', KEYS[2], '{"seq":' .. seq .. string.sub(ARGV[8], 9))
      redis.call('ZREM', KEYS[3], ARGV[11])
      redis.call('ZADD', KEYS[4], 0, ARGV[11])
      redis.call('PUBLISH', ARGV[9], ARGV[10])
      seq = tostring(seq)
    end
  end
end
return {'ok', tostring(f), doc, seq, h[5] or '', h[6] or '', h[7] or '', st, validated}
`)

// Risk is the check that lets a pending order become validated: its
// notional (see Order.Notional) at most MaxNotional.
type Risk struct {
	MarketPrice, MaxNotional float64
}

// Acquire takes the order's lease for ttl. It returns ErrLeaseHeld (with the
// lease's end in Lease.Until) while another worker holds it, ErrTerminal
// (with the order in Lease.Order) once the order ended, ErrNotFound.
func (s *Store) Acquire(ctx context.Context, tenant, id string, ttl time.Duration) (*Lease, error) {
	return s.acquire(ctx, tenant, id, ttl, nil)
}

// AcquireValidate is Acquire that, in the same script, also moves a
// pending order to validated when no cancel or compensation was asked of
// it and its notional is within r: the transition Transition would make
// (event, indexes, announcement), under the new lease, saving the saga a
// round trip. Lease.Validated says it did; an order it left pending (over
// the limit, or anything unexpected) is the caller's to move. Running it
// again (a redelivered task) finds the order validated and only leases it.
func (s *Store) AcquireValidate(ctx context.Context, tenant, id string, ttl time.Duration, r Risk) (*Lease, error) {
	return s.acquire(ctx, tenant, id, ttl, &r)
}

func (s *Store) acquire(ctx context.Context, tenant, id string, ttl time.Duration, r *Risk) (*Lease, error) {
	now := s.now()
	until := now.Add(ttl)
	owner := strconv.FormatUint(rand.Uint64(), 36) // tells our own retried call from another worker
	keys := []string{s.k.order(tenant, id)}
	args := []any{now.UnixMilli(), until.UnixMilli(), owner}
	if r != nil {
		at, _ := json.Marshal(now) // a time always encodes
		// Plain decimals: the embedded Redis of `asyncgate dev` (miniredis)
		// reads no exponent in tonumber.
		keys = append(keys, s.k.events(tenant, id), s.k.statusIndex(tenant, Pending), s.k.statusIndex(tenant, Validated))
		args = append(args, "1", strconv.FormatFloat(r.MarketPrice, 'f', -1, 64), strconv.FormatFloat(r.MaxNotional, 'f', -1, 64),
			string(at), eventJSON(Event{Type: StatusEvent(Validated), At: now, Status: Validated}), s.k.changed(), tenant+"/"+id, id)
	}
	res, err := acquireScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("acquire lease: %w", err)
	}
	l := &Lease{Tenant: tenant, ID: id}
	switch res[0] {
	case "notfound":
		return nil, ErrNotFound
	case "held":
		ms, _ := strconv.ParseInt(res[1].(string), 10, 64)
		l.Until = time.UnixMilli(ms)
		return l, ErrLeaseHeld
	case "terminal":
		o, err := decodeOrder(tenant, []any{res[2], res[1], res[3], nil})
		if err != nil {
			return nil, err
		}
		l.Order = o
		return l, ErrTerminal
	}
	l.Token, _ = strconv.ParseInt(res[1].(string), 10, 64)
	l.Until = until
	o, err := decodeOrder(tenant, []any{res[2], res[7], res[3], res[4]})
	if err != nil {
		return nil, err
	}
	l.Order = o
	l.Compensation, _ = res[5].(string)
	l.Executing = res[6] == "1"
	l.Validated = res[8] == "1"
	return l, nil
}

var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'fence') == ARGV[1] then redis.call('HDEL', KEYS[1], 'lease') end
return 0
`)

// Release gives the lease up early, if it is still ours.
func (s *Store) Release(ctx context.Context, l *Lease) error {
	return releaseScript.Run(ctx, s.rdb, []string{s.k.order(l.Tenant, l.ID)}, l.Token).Err()
}

var applyScript = redis.NewScript(luaTerminal + `
local st = redis.call('HMGET', KEYS[1], 'status', 'fence')
if not st[1] then return {'notfound'} end
if st[1] ~= ARGV[2] then
  -- The same call again (the client retried after losing the reply): done already.
  if st[1] == ARGV[3] and st[2] == ARGV[4] and redis.call('HGET', KEYS[1], 'doc') == ARGV[5] then
    local exec = redis.call('HGET', KEYS[1], 'exec')
    return {'ok', redis.call('HGET', KEYS[1], 'seq'), exec == '1' and '1' or '0'}
  end
  return {'conflict', st[1]}
end
if st[2] ~= ARGV[4] then return {'fenced', st[2]} end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'doc', ARGV[5], 'status', ARGV[3])
redis.call('RPUSH', KEYS[2], '{"seq":' .. seq .. string.sub(ARGV[6], 9))
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
if terminal[ARGV[3]] then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[1], 'lease')
  if ARGV[10] == '1' then redis.call('ZADD', KEYS[6], ARGV[11], ARGV[1]) end
  redis.call('ZADD', KEYS[7], 'NX', ARGV[11], ARGV[1])
elseif ARGV[7] ~= '0' then
  redis.call('HSET', KEYS[1], 'lease', ARGV[7])
end
local exec = '0'
if ARGV[12] == '1' and not redis.call('HGET', KEYS[1], 'comp') and redis.call('HGET', KEYS[1], 'cancel') ~= '1' then
  redis.call('HSET', KEYS[1], 'exec', '1')
  exec = '1'
end
redis.call('PUBLISH', ARGV[8], ARGV[9])
return {'ok', tostring(seq), exec}
`)

// Change is one status change made under a lease.
type Change struct {
	To     Status
	Reason string
	Fill   *Fill
	// Extend renews the lease for this long from now. Zero leaves it.
	Extend time.Duration
	// ReleasePending, with a terminal To, records in the same script that
	// the order's funds still await release (see PendingReleases).
	ReleasePending bool
	// BeginExecute, with To FundsReserved, also does what BeginExecute
	// does, in the same script, unless a cancel or compensation was asked
	// first: Lease.Executing says whether it did. A caller finding it unset
	// calls BeginExecute, which tells why (ErrCompensate).
	BeginExecute bool
}

// Transition moves the leased order to c.To, appending the event, updating
// the indexes and announcing the change, all in one script. A terminal
// change also records the order in the tenant's outbox (see Outbox), in the
// same script, so that its webhook event cannot be lost. It returns
// ErrInvalidTransition when the state machine forbids it or the order moved
// on, ErrFenced when the lease was taken over. On success l.Order is updated.
func (s *Store) Transition(ctx context.Context, l *Lease, c Change) error {
	from := l.Order.Status
	if !CanTransition(from, c.To) {
		return fmt.Errorf("%w: %s → %s", ErrInvalidTransition, from, c.To)
	}
	now := s.now()
	ev := Event{Type: StatusEvent(c.To), At: now, Status: c.To, Reason: c.Reason, Fill: c.Fill}
	next := l.Order.Apply(ev)
	next.Version = l.Order.Version + 1
	extend := int64(0)
	if c.Extend > 0 {
		extend = now.Add(c.Extend).UnixMilli()
	}
	t, id := l.Tenant, l.ID
	res, err := applyScript.Run(ctx, s.rdb,
		[]string{s.k.order(t, id), s.k.events(t, id), s.k.statusIndex(t, from), s.k.statusIndex(t, c.To), s.k.active(t), s.k.releases(t), s.k.outbox(t)},
		id, string(from), string(c.To), l.Token, docJSON(&next), eventJSON(ev), extend, s.k.changed(), t+"/"+id, b2s(c.ReleasePending), now.UnixMilli(),
		b2s(c.BeginExecute && c.To == FundsReserved),
	).StringSlice()
	if err != nil {
		return fmt.Errorf("transition %s → %s: %w", from, c.To, err)
	}
	switch res[0] {
	case "ok":
		next.Version, _ = strconv.ParseInt(res[1], 10, 64)
		l.Order = &next
		if extend > 0 {
			l.Until = time.UnixMilli(extend)
		}
		if len(res) > 2 && res[2] == "1" {
			l.Executing = true
		}
		return nil
	case "notfound":
		return ErrNotFound
	case "fenced":
		return ErrFenced
	default:
		return fmt.Errorf("%w: order is %s, not %s", ErrInvalidTransition, res[1], from)
	}
}

var beginExecuteScript = redis.NewScript(`
local h = redis.call('HMGET', KEYS[1], 'status', 'fence', 'cancel', 'comp')
if not h[1] then return 'notfound' end
if h[2] ~= ARGV[1] then return 'fenced' end
if h[1] ~= 'funds_reserved' then return 'conflict' end
if h[3] == '1' or h[4] then return 'compensate' end
redis.call('HSET', KEYS[1], 'exec', '1')
return 'ok'
`)

// ErrCompensate: the order must be compensated (a cancel or compensation was requested) instead of advanced.
var ErrCompensate = fmt.Errorf("order must be compensated")

// BeginExecute marks the point of no return before the execution call. From
// then on a cancel is refused (ErrTooLate), and compensation must find out
// whether the execution happened before releasing funds. It returns
// ErrCompensate when a cancel or compensation was requested first.
func (s *Store) BeginExecute(ctx context.Context, l *Lease) error {
	res, err := beginExecuteScript.Run(ctx, s.rdb, []string{s.k.order(l.Tenant, l.ID)}, l.Token).Text()
	if err != nil {
		return fmt.Errorf("begin execute: %w", err)
	}
	switch res {
	case "ok":
		l.Executing = true
		return nil
	case "notfound":
		return ErrNotFound
	case "fenced":
		return ErrFenced
	case "compensate":
		return ErrCompensate
	default:
		return ErrInvalidTransition
	}
}

var requestCompensationScript = redis.NewScript(luaTerminal + `
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'notfound'} end
if terminal[st] then return {'terminal'} end
redis.call('HSETNX', KEYS[1], 'comp', ARGV[1])
return {'ok', redis.call('HGET', KEYS[1], 'comp')}
`)

// RequestCompensation records that the order must be rolled back and ended
// with reason (the first reason recorded wins). It needs no lease: the
// compensation task takes the lease to carry it out. ErrTerminal when the
// order already ended.
func (s *Store) RequestCompensation(ctx context.Context, tenant, id, reason string) error {
	res, err := requestCompensationScript.Run(ctx, s.rdb, []string{s.k.order(tenant, id)}, reason).StringSlice()
	if err != nil {
		return fmt.Errorf("request compensation: %w", err)
	}
	switch res[0] {
	case "ok":
		return nil
	case "notfound":
		return ErrNotFound
	default:
		return ErrTerminal
	}
}

// Control is the worker-facing state of an in-flight order.
type Control struct {
	Status       Status
	Deadline     time.Time
	Compensation string
	Cancel       bool
	Executing    bool
}

// Control reads what the reconciler needs to know of an order.
func (s *Store) Control(ctx context.Context, tenant, id string) (*Control, error) {
	h, err := s.rdb.HMGet(ctx, s.k.order(tenant, id), "doc", "status", "seq", "cancel", "comp", "exec").Result()
	if err != nil {
		return nil, fmt.Errorf("read order control: %w", err)
	}
	o, err := decodeOrder(tenant, h[:4])
	if err != nil {
		return nil, err
	}
	c := &Control{Status: o.Status, Deadline: o.Deadline, Cancel: h[3] == "1", Executing: h[5] == "1"}
	c.Compensation, _ = h[4].(string)
	return c, nil
}

func b2s(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

var endExecuteScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'exec')
return 1
`)

// EndExecute takes back BeginExecute once the execution call is known not
// to have been acted upon (every attempt refused unprocessed): the order may
// then be cancelled or compensated without asking the execution service.
func (s *Store) EndExecute(ctx context.Context, l *Lease) error {
	ok, err := endExecuteScript.Run(ctx, s.rdb, []string{s.k.order(l.Tenant, l.ID)}, l.Token).Int()
	if err != nil {
		return fmt.Errorf("end execute: %w", err)
	}
	if ok == 0 {
		return ErrFenced
	}
	l.Executing = false
	return nil
}

// PendingReleases returns up to limit ids of the tenant's ended orders whose
// funds still await release, recorded before the given time.
func (s *Store) PendingReleases(ctx context.Context, tenant string, before time.Time, limit int) ([]string, error) {
	return s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: s.k.releases(tenant), Start: "-inf", Stop: strconv.FormatInt(before.UnixMilli(), 10),
		ByScore: true, Count: int64(limit),
	}).Result()
}

// ReleaseDone records that the order's funds were released.
func (s *Store) ReleaseDone(ctx context.Context, tenant, id string) error {
	return s.rdb.ZRem(ctx, s.k.releases(tenant), id).Err()
}
