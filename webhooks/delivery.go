package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Delivery statuses.
const (
	// DeliveryPending: waiting for its first or next attempt.
	DeliveryPending = "pending"
	// DeliveryDelivered: a 2xx answer was received.
	DeliveryDelivered = "delivered"
	// DeliveryFailed: every attempt failed; the task is in the archive (the
	// dead-letter queue), from where a redelivery can start it again.
	DeliveryFailed = "failed"
	// DeliveryHeld: its endpoint is disabled; it is delivered when the
	// endpoint is enabled again.
	DeliveryHeld = "held"
)

// DeliveryStatuses lists every delivery status.
var DeliveryStatuses = []string{DeliveryPending, DeliveryDelivered, DeliveryFailed, DeliveryHeld}

// Delivery is one event on its way to one target: an endpoint, or the
// order's callback_url.
type Delivery struct {
	ID        string `json:"id"`
	EventID   string `json:"event_id"`
	EventType string `json:"event_type"`
	// EndpointID is empty for a delivery to an order's callback_url.
	EndpointID string `json:"endpoint_id,omitempty"`
	// URL is where it goes: the endpoint's URL when the event was
	// published, or the callback_url.
	URL          string    `json:"url"`
	Status       string    `json:"status"`
	AttemptCount int       `json:"attempt_count"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// NextAttemptAt is when a pending delivery is attempted next.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// Attempts is the attempt log, oldest first (the newest
	// StoreConfig.MaxAttemptLog).
	Attempts []Attempt `json:"attempts"`
	// LastError says why a failed delivery failed when its attempt log
	// does not: its task went to the dead-letter queue without a last
	// attempt (see MarkArchived).
	LastError string `json:"last_error,omitempty"`
}

// Attempt is one try of a delivery.
type Attempt struct {
	At time.Time `json:"at"`
	// StatusCode is the receiver's HTTP status; 0 when none came back.
	StatusCode int `json:"status_code,omitempty"`
	// LatencyMS is from sending the request to the end of the response
	// (or the error), in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// Error says why the attempt failed; empty on success.
	Error string `json:"error,omitempty"`
	// Response is the start of the response body (at most
	// DelivererConfig.MaxResponseBytes), as text.
	Response string `json:"response,omitempty"`
	// ResponseTruncated is set when the body was longer than Response.
	ResponseTruncated bool `json:"response_truncated,omitempty"`
}

// Ref returns what the task that carries d out needs.
func (d *Delivery) Ref(tenant string) Ref {
	return Ref{Tenant: tenant, DeliveryID: d.ID, EventID: d.EventID, EndpointID: d.EndpointID}
}

// publishScript stores an event and its deliveries (see Publish). KEYS[1]
// is the event; four keys per delivery (the delivery, its index, its
// endpoint or the callback secrets, the endpoint's held set); then the feed
// and, last, the subscriptions hash. ARGV[8] is the number of deliveries;
// each has four arguments from ARGV[10]: its id, its endpoint (empty for the
// callback_url), its URL as recorded, and the subscription the caller read
// for the endpoint. The caller's subscriptions must be the endpoints
// subscribed to the event's type now, each as stored: otherwise nothing is
// written and the answer is 'stale' with the stored subscriptions, to
// publish again from.
var publishScript = redis.NewScript(luaFeedAdd + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local now, ret, n = ARGV[3], ARGV[4], tonumber(ARGV[8])
local subs = redis.call('HGETALL', KEYS[#KEYS])
local want, cur, typ = 0, {}, ',' .. ARGV[2] .. ','
for j = 1, #subs, 2 do
  local events = string.match(subs[j+1], '^[^|]*|([^|]*)')
  if events and string.find(events, typ, 1, true) then
    cur[subs[j]] = subs[j+1]
    want = want + 1
  end
end
for i = 1, n do
  local a = 9 + 4*(i-1)
  if ARGV[a+2] ~= '' then
    if cur[ARGV[a+2]] ~= ARGV[a+4] then want = -1 break end
    want = want - 1
  end
end
if want ~= 0 then
  table.insert(subs, 1, 'stale')
  return subs
end
local ids, out = {}, {'ok'}
for i = 1, n do
  local kd, ki, ke, kh = KEYS[4*i-2], KEYS[4*i-1], KEYS[4*i], KEYS[4*i+1]
  local a = 9 + 4*(i-1)
  local id, ep, url = ARGV[a+1], ARGV[a+2], ARGV[a+3]
  local status, ok = 'pending', true
  if ep ~= '' then
    local e = redis.call('HMGET', ke, 'id', 'disabled')
    if not e[1] then ok = false
    elseif e[2] and e[2] ~= '' then status = 'held' end
  else
    redis.call('HSETNX', ke, 'secret', ARGV[7])
  end
  if ok then
    redis.call('HSET', kd, 'id', id, 'event', ARGV[9], 'type', ARGV[2], 'ep', ep, 'url', url, 'status', status,
      'attempts', 0, 'limit', ARGV[5], 'created', now, 'updated', now, 'next', now)
    redis.call('PEXPIRE', kd, ret)
    redis.call('ZADD', ki, 0, id)
    redis.call('ZREMRANGEBYLEX', ki, '-', '(' .. ARGV[6])
    if status == 'held' then redis.call('ZADD', kh, now, id) end
    table.insert(ids, id)
    table.insert(out, id)
    table.insert(out, ep)
    table.insert(out, status)
  end
end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'type', ARGV[2], 'deliveries', table.concat(ids, ','), 'created', now)
local f = 10 + 4*n
redis.call('PEXPIRE', KEYS[1], ARGV[f+3])
feedAdd(KEYS[#KEYS-1], ARGV[9], ARGV[f], ARGV[f+1], ARGV[f+2])
return out
`)

// Publish stores the event and one delivery per target, in one script: each
// endpoint of the tenant subscribed to the event's type (held if the
// endpoint is disabled), and callbackURL unless it is empty, signed with the
// tenant's callback secret. It returns the deliveries to schedule: those
// pending.
//
// Publish is idempotent per event id: once the event is stored, a second
// call creates nothing (not even for an endpoint registered since) and
// returns those of the event's deliveries still pending, so that a retried
// fan-out schedules what a crashed one may have missed, and nothing twice.
// It returns ErrEventTooLarge for a body over StoreConfig.MaxEventBytes.
//
// The tenant's subscriptions are read from the store's copy of them: the
// script checks that copy against the stored ones and, when they differ,
// answers with the stored ones, from which Publish runs again. A tenant's
// events cost one round trip while its endpoints do not change.
func (s *Store) Publish(ctx context.Context, tenant string, ev *Event, callbackURL string) ([]Ref, error) {
	body, err := ev.Body()
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if len(body) > s.cfg.MaxEventBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrEventTooLarge, len(body), s.cfg.MaxEventBytes)
	}
	subs, ok := s.subs.get(tenant)
	if !ok {
		if subs, err = s.rdb.HGetAll(ctx, s.k.subscriptions(tenant)).Result(); err != nil {
			return nil, fmt.Errorf("publish event: read subscriptions: %w", err)
		}
		s.subs.put(tenant, subs)
	}
	var cbSecret string
	if callbackURL != "" {
		sec, err := NewSecret()
		if err != nil {
			return nil, err
		}
		cbSecret = sec.String()
	}
	for range maxStale {
		res, err := s.publish(ctx, tenant, ev, body, callbackURL, cbSecret, subs)
		if err != nil {
			return nil, fmt.Errorf("publish event: %w", err)
		}
		switch res[0] {
		case "exists": // another fan-out of the same change won the race
			refs, _, err := s.pendingOfEvent(ctx, tenant, ev.ID)
			return refs, err
		case "stale": // the tenant's endpoints changed: again, with them
			subs = make(map[string]string, len(res)/2)
			for i := 1; i+1 < len(res); i += 2 {
				subs[res[i]] = res[i+1]
			}
			s.subs.put(tenant, subs)
			continue
		}
		var refs []Ref
		for i := 1; i+2 < len(res); i += 3 {
			if res[i+2] == DeliveryPending {
				refs = append(refs, Ref{Tenant: tenant, DeliveryID: res[i], EventID: ev.ID, EndpointID: res[i+1]})
			}
		}
		return refs, nil
	}
	return nil, fmt.Errorf("publish event: the tenant's endpoints changed %d times during the publication", maxStale)
}

// maxStale bounds the runs of Publish's script that find the tenant's
// subscriptions changed since they were read.
const maxStale = 5

// publish runs the publish script once, for the subscriptions subs.
func (s *Store) publish(ctx context.Context, tenant string, ev *Event, body []byte, callbackURL, cbSecret string, subs map[string]string) ([]string, error) {
	now := s.cfg.Now()
	keys := make([]string, 1, 7)
	keys[0] = s.k.event(tenant, ev.ID)
	args := make([]any, 9, 9+4+4)
	args[0], args[1], args[2], args[3], args[4] = body, ev.Type, now.UnixMilli(), s.cfg.Retention.Milliseconds(), s.cfg.MaxAttempts
	args[5], args[6], args[7], args[8] = idCutoff("dlv_", now.Add(-s.cfg.Retention)), cbSecret, 0, ev.ID
	n := 0
	add := func(ep, url, sub string) {
		id := "dlv_" + uuid.Must(uuid.NewV7()).String()
		if ep == "" {
			keys = append(keys, s.k.delivery(tenant, id), s.k.callbackDeliveries(tenant), s.k.callback(tenant), s.k.callback(tenant))
		} else {
			keys = append(keys, s.k.delivery(tenant, id), s.k.endpointDeliveries(tenant, ep), s.k.endpoint(tenant, ep), s.k.held(tenant, ep))
		}
		args = append(args, id, ep, url, sub)
		n++
	}
	// Candidates, in id order (creation order); the script checks that
	// they are the subscribed endpoints, each still exists and whether it
	// is disabled.
	for _, id := range slices.Sorted(maps.Keys(subs)) {
		_, rest, _ := strings.Cut(subs[id], "|")
		events, url, _ := strings.Cut(rest, "|")
		if strings.Contains(events, ","+ev.Type+",") {
			add(id, MaskURL(url), subs[id]) // the delivery's record shows where it went; its attempts read the endpoint's URL
		}
	}
	if callbackURL != "" {
		add("", callbackURL, "")
	}
	args[7] = n
	// The feed and the subscriptions: their keys last, the feed's
	// arguments after the deliveries'.
	keys = append(keys, s.k.feed(tenant), s.k.subscriptions(tenant))
	args = append(append(args, s.feedArgs(tenant, now)...), s.eventTTL())
	return publishScript.Run(ctx, s.rdb, keys, args...).StringSlice()
}

// idCutoff is the smallest id, of the form prefix + UUIDv7, made at t or
// later: the boundary for trimming indexes ordered by id.
func idCutoff(prefix string, t time.Time) string {
	ms := t.UnixMilli()
	return fmt.Sprintf("%s%08x-%04x", prefix, uint64(ms)>>16, uint64(ms)&0xffff)
}

// pendingOfEvent returns the pending deliveries of a stored event, and
// whether the event is stored.
func (s *Store) pendingOfEvent(ctx context.Context, tenant, eventID string) ([]Ref, bool, error) {
	ids, err := s.rdb.HGet(ctx, s.k.event(tenant, eventID), "deliveries").Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read event: %w", err)
	}
	if ids == "" {
		return nil, true, nil
	}
	list := strings.Split(ids, ",")
	cmds := make([]*redis.SliceCmd, len(list))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range list {
			cmds[i] = p.HMGet(ctx, s.k.delivery(tenant, id), "status", "ep")
		}
		return nil
	})
	if err != nil {
		return nil, true, fmt.Errorf("read event deliveries: %w", err)
	}
	var refs []Ref
	for i, c := range cmds {
		v := c.Val()
		if v[0] == DeliveryPending {
			ep, _ := v[1].(string)
			refs = append(refs, Ref{Tenant: tenant, DeliveryID: list[i], EventID: eventID, EndpointID: ep})
		}
	}
	return refs, true, nil
}

func decodeDelivery(h map[string]string, log []string) *Delivery {
	if h["id"] == "" {
		return nil
	}
	d := &Delivery{
		ID: h["id"], EventID: h["event"], EventType: h["type"], EndpointID: h["ep"], URL: MaskURL(h["url"]), Status: h["status"],
		CreatedAt: msTime(h["created"]), UpdatedAt: msTime(h["updated"]), Attempts: make([]Attempt, 0, len(log)),
		LastError: h["last_error"],
	}
	d.AttemptCount, _ = strconv.Atoi(h["attempts"])
	if d.Status == DeliveryPending {
		d.NextAttemptAt = msTimePtr(h["next"])
	}
	for _, raw := range log {
		var a Attempt
		if json.Unmarshal([]byte(raw), &a) == nil {
			d.Attempts = append(d.Attempts, a)
		}
	}
	return d
}

// readDeliveries reads deliveries with their logs; expired ones are nil.
func (s *Store) readDeliveries(ctx context.Context, tenant string, ids []string) ([]*Delivery, error) {
	hs := make([]*redis.MapStringStringCmd, len(ids))
	logs := make([]*redis.StringSliceCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			hs[i] = p.HGetAll(ctx, s.k.delivery(tenant, id))
			logs[i] = p.LRange(ctx, s.k.attempts(tenant, id), 0, -1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read deliveries: %w", err)
	}
	out := make([]*Delivery, len(ids))
	for i := range ids {
		out[i] = decodeDelivery(hs[i].Val(), logs[i].Val())
	}
	return out, nil
}

// Delivery returns the tenant's delivery id with its attempt log, or
// ErrDeliveryNotFound.
func (s *Store) Delivery(ctx context.Context, tenant, id string) (*Delivery, error) {
	if !ValidDeliveryID(id) {
		return nil, ErrDeliveryNotFound
	}
	ds, err := s.readDeliveries(ctx, tenant, []string{id})
	if err != nil {
		return nil, err
	}
	if ds[0] == nil {
		return nil, ErrDeliveryNotFound
	}
	return ds[0], nil
}

// DeliveryListParams select a page of an endpoint's deliveries.
type DeliveryListParams struct {
	// Status filters by status; empty means all.
	Status string
	// After is the cursor: the next_cursor of the previous page.
	After string
	// Limit is the page size. Defaults to 20.
	Limit int
}

// maxScan bounds how many deliveries one filtered page looks at; a page
// may then come back short, with a cursor to go on.
const maxScan = 1000

// Deliveries returns the endpoint's deliveries, newest first, with their
// attempt logs, and the cursor of the next page ("" at the end).
// ErrEndpointNotFound.
func (s *Store) Deliveries(ctx context.Context, tenant, endpointID string, p DeliveryListParams) ([]*Delivery, string, error) {
	if !ValidEndpointID(endpointID) {
		return nil, "", ErrEndpointNotFound
	}
	n, err := s.rdb.Exists(ctx, s.k.endpoint(tenant, endpointID)).Result()
	if err != nil {
		return nil, "", fmt.Errorf("list deliveries: %w", err)
	}
	if n == 0 {
		return nil, "", ErrEndpointNotFound
	}
	if p.Limit <= 0 {
		p.Limit = 20
	}
	batch := p.Limit + 1
	if p.Status != "" {
		batch = min(4*p.Limit, 200)
	}
	key := s.k.endpointDeliveries(tenant, endpointID)
	upper := "+"
	if p.After != "" {
		upper = "(" + p.After
	}
	out := []*Delivery{}
	scanned := 0
	for {
		ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: upper, Stop: "-", ByLex: true, Rev: true, Count: int64(batch)}).Result()
		if err != nil {
			return nil, "", fmt.Errorf("list deliveries: %w", err)
		}
		ds, err := s.readDeliveries(ctx, tenant, ids)
		if err != nil {
			return nil, "", err
		}
		for i, d := range ds {
			if d != nil && (p.Status == "" || d.Status == p.Status) {
				if len(out) == p.Limit {
					return out, out[len(out)-1].ID, nil
				}
				out = append(out, d)
			}
			if scanned++; scanned >= maxScan && len(out) < p.Limit {
				return out, ids[i], nil
			}
		}
		if len(ids) < batch {
			return out, "", nil
		}
		upper = "(" + ids[len(ids)-1]
	}
}

var redeliverScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[4]) == 0 then return 'notfound' end
if ARGV[1] == '1' then
  local e = redis.call('HMGET', KEYS[2], 'id', 'disabled')
  if not e[1] then return 'deleted' end
  if e[2] and e[2] ~= '' then return 'disabled' end
  redis.call('ZREM', KEYS[3], ARGV[3])
  -- A manual redelivery goes now, whatever the breaker says: the attempt
  -- is its probe (begin opens the breaker for the probe window behind it),
  -- and a success closes the breaker.
  redis.call('HDEL', KEYS[2], 'open_until')
end
redis.call('HDEL', KEYS[1], 'last_error')
local d = redis.call('HMGET', KEYS[1], 'attempts', 'limit')
local lim = math.max(tonumber(d[1] or '0') + 1, tonumber(d[2] or '0'))
redis.call('HSET', KEYS[1], 'status', 'pending', 'limit', lim, 'next', ARGV[2], 'updated', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return 'ok'
`)

// PrepareRedelivery makes the delivery pending again, due now, with at
// least one attempt left in its budget, and returns what its task needs;
// the caller then runs or enqueues the task. It returns ErrDeliveryNotFound,
// ErrEndpointNotFound when its endpoint was deleted, ErrEndpointDisabled.
func (s *Store) PrepareRedelivery(ctx context.Context, tenant, id string) (Ref, error) {
	if !ValidDeliveryID(id) {
		return Ref{}, ErrDeliveryNotFound
	}
	h, err := s.rdb.HMGet(ctx, s.k.delivery(tenant, id), "event", "ep").Result()
	if err != nil {
		return Ref{}, fmt.Errorf("redeliver: %w", err)
	}
	eventID, _ := h[0].(string)
	ep, _ := h[1].(string)
	if eventID == "" {
		return Ref{}, ErrDeliveryNotFound
	}
	target, held, isEndpoint := s.k.callback(tenant), s.k.callback(tenant), "0"
	if ep != "" {
		target, held, isEndpoint = s.k.endpoint(tenant, ep), s.k.held(tenant, ep), "1"
	}
	res, err := redeliverScript.Run(ctx, s.rdb, []string{s.k.delivery(tenant, id), target, held, s.k.event(tenant, eventID)},
		isEndpoint, s.cfg.Now().UnixMilli(), id, s.cfg.Retention.Milliseconds()).Text()
	if err != nil {
		return Ref{}, fmt.Errorf("redeliver: %w", err)
	}
	switch res {
	case "notfound":
		return Ref{}, ErrDeliveryNotFound
	case "deleted":
		return Ref{}, fmt.Errorf("%w: the delivery's endpoint was deleted", ErrEndpointNotFound)
	case "disabled":
		return Ref{}, ErrEndpointDisabled
	}
	return Ref{Tenant: tenant, DeliveryID: id, EventID: eventID, EndpointID: ep, OrderID: s.eventOrderID(ctx, tenant, eventID)}, nil
}

// eventOrderID returns the id of the order an event is about, read from
// its stored body, for the delivery's log lines; "" when it cannot be read.
func (s *Store) eventOrderID(ctx context.Context, tenant, eventID string) string {
	body, err := s.rdb.HGet(ctx, s.k.event(tenant, eventID), "body").Bytes()
	if err != nil {
		return ""
	}
	var ev struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &ev) != nil {
		return ""
	}
	return ev.Data.ID
}

// beginScript reads what an attempt needs and decides whether it may go:
// the delivery must be pending (or held, with its endpoint enabled again),
// due, its endpoint enabled and not waiting (an open breaker, or a
// receiver's Retry-After), and a slot of the target free: at most
// ARGV[6] attempts to one endpoint (or one tenant's callback URLs) are in
// flight, each holding a slot (KEYS[5], a zset of delivery ids scored by
// when the slot expires, so that a killed worker's slot frees itself)
// until finish gives it back. After a run of failures the breaker is
// half-open once its wait ends: the attempt that finds it so (and gets a
// slot) is the probe, and the endpoint's other deliveries wait out the
// probe window behind it.
var beginScript = redis.NewScript(luaRateLimit + `
local d = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'limit', 'url', 'next')
if not d[1] then return {'gone'} end
if d[1] == 'delivered' or d[1] == 'failed' then return {d[1]} end
local body = redis.call('HGET', KEYS[2], 'body')
if not body then return {'gone'} end
local now = tonumber(ARGV[1])
if d[5] and tonumber(d[5]) > now then return {'early', d[5]} end
local url, s, probe, rate = d[4], nil, false, 0
if ARGV[2] == '1' then
  local e = redis.call('HMGET', KEYS[3], 'url', 'secret', 'prev', 'prev_until', 'disabled', 'streak', 'open_until', 'mps')
  if not e[1] then
    redis.call('HSET', KEYS[1], 'status', 'failed', 'updated', ARGV[1])
    redis.call('HDEL', KEYS[1], 'next')
    return {'deleted'}
  end
  if e[5] and e[5] ~= '' then
    redis.call('HSET', KEYS[1], 'status', 'held', 'updated', ARGV[1])
    redis.call('HDEL', KEYS[1], 'next')
    redis.call('ZADD', KEYS[4], ARGV[1], ARGV[5])
    return {'held'}
  end
  if tonumber(e[7] or '0') > now then
    redis.call('HSET', KEYS[1], 'next', e[7])
    return {'open', e[7]}
  end
  rate = luaRate(KEYS[6], tonumber(e[8] or '0') or 0, now)
  if rate < 0 then return {'rate', string.format('%d', math.ceil(-rate))} end
  probe = tonumber(e[6] or '0') >= tonumber(ARGV[3])
  url, s = e[1], {e[2], e[3] or '', e[4] or '0'}
else
  local c = redis.call('HMGET', KEYS[3], 'secret', 'prev', 'prev_until')
  s = {c[1] or '', c[2] or '', c[3] or '0'}
end
local cap = tonumber(ARGV[6])
if cap > 0 then
  -- Expired slots are dropped only when they would count: the set is full.
  if redis.call('ZCARD', KEYS[5]) >= cap then
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
    if not redis.call('ZSCORE', KEYS[5], ARGV[5]) and redis.call('ZCARD', KEYS[5]) >= cap then
      return {'busy', redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')[2]}
    end
  end
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[5])
  redis.call('PEXPIREAT', KEYS[5], redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')[2])
end
if probe then
  redis.call('HSET', KEYS[3], 'open_until', now + tonumber(ARGV[4]))
end
if rate > 0 then redis.call('SET', KEYS[6], string.format('%.3f', rate), 'PX', math.ceil(rate - now) + 1000) end
return {'ok', body, url, s[1], s[2], s[3], d[2], d[3]}
`)

// attempt is what begin hands to one attempt.
type attempt struct {
	verdict   string // ok, gone, delivered, failed, deleted, held, early, open, busy
	until     time.Time
	body      []byte
	url       string
	secrets   []Secret
	attempts  int // made before this one
	limit     int
	endpoints bool
}

func (s *Store) targetKeys(r Ref) (target, held string) {
	if r.EndpointID == "" {
		return s.k.callback(r.Tenant), s.k.delivery(r.Tenant, r.DeliveryID)
	}
	return s.k.endpoint(r.Tenant, r.EndpointID), s.k.held(r.Tenant, r.EndpointID)
}

// begin loads a delivery for an attempt; see beginScript.
// A slot is held until now+sl.ttl; sl.max 0 means no cap.
func (s *Store) begin(ctx context.Context, r Ref, now time.Time, threshold int, probe time.Duration, sl slotConfig) (*attempt, error) {
	target, held := s.targetKeys(r)
	isEndpoint := "0"
	if r.EndpointID != "" {
		isEndpoint = "1"
	}
	res, err := beginScript.Run(ctx, s.rdb,
		[]string{s.k.delivery(r.Tenant, r.DeliveryID), s.k.event(r.Tenant, r.EventID), target, held, s.k.targetSlots(r.Tenant, r.EndpointID), s.k.rate(r.Tenant, r.EndpointID)},
		now.UnixMilli(), isEndpoint, threshold, probe.Milliseconds(), r.DeliveryID, sl.max, now.Add(sl.ttl).UnixMilli()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("begin delivery: %w", err)
	}
	a := &attempt{verdict: res[0], endpoints: r.EndpointID != ""}
	switch a.verdict {
	case "early", "open", "busy", "rate":
		a.until = msTime(res[1])
		return a, nil
	case "ok":
	default:
		return a, nil
	}
	a.body, a.url = []byte(res[1]), res[2]
	a.attempts, _ = strconv.Atoi(res[6])
	a.limit, _ = strconv.Atoi(res[7])
	rec := endpointRecord{}
	if rec.secret, err = parseStoredSecret(res[3]); err != nil {
		return nil, fmt.Errorf("begin delivery: %w", err)
	}
	if err := rec.setPrev(res[4], res[5]); err != nil {
		return nil, fmt.Errorf("begin delivery: %w", err)
	}
	a.secrets = rec.secrets(now)
	return a, nil
}

// outcome is what an attempt asks finish to record.
type outcome struct {
	kind       string // delivered, retry, failed, gone
	next       time.Time
	openUntil  time.Time // a receiver's Retry-After: no attempt to the endpoint before
	attempt    Attempt
	disableMsg string // the reason to give if a long run of failures disables the endpoint
}

// finishScript records an attempt: the log entry, the delivery's new
// status, and the endpoint's breaker (a run of failures opens it, longer
// and longer; a success closes it; a run lasting DisableAfter, or a 410,
// disables the endpoint and holds the delivery), and gives the attempt's
// slot back (KEYS[7]).
var finishScript = redis.NewScript(luaSetSub + `
local now = tonumber(ARGV[1])
local outcome = ARGV[2]
if redis.call('RPUSH', KEYS[2], ARGV[3]) > tonumber(ARGV[12]) then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[12]), -1)
end
local d = redis.call('HMGET', KEYS[1], 'status', 'attempts')
local status, attempts = d[1], (tonumber(d[2] or '0') or 0) + 1
local disabled = false
if ARGV[5] == '1' then
  local e = redis.call('HMGET', KEYS[3], 'id', 'disabled', 'fail_since', 'streak', 'open_until')
  if not e[1] then
    if outcome ~= 'delivered' then outcome = 'failed' end
  elseif outcome == 'delivered' then
    if e[3] or e[4] or e[5] then redis.call('HDEL', KEYS[3], 'streak', 'fail_since', 'open_until') end
  else
    local streak = redis.call('HINCRBY', KEYS[3], 'streak', 1)
    local since = tonumber(e[3] or '0')
    if since == 0 then
      since = now
      redis.call('HSET', KEYS[3], 'fail_since', ARGV[1])
    end
    local th = tonumber(ARGV[6])
    local open = tonumber(ARGV[10])
    if streak >= th then
      local cool = math.min(tonumber(ARGV[7]) * 2 ^ math.min(streak - th, 30), tonumber(ARGV[8]))
      open = math.max(open, now + cool)
    end
    if open > 0 then redis.call('HSET', KEYS[3], 'open_until', string.format('%d', open)) end
    local reason = ''
    if outcome == 'gone' then reason = ARGV[15]
    elseif streak >= th and now - since >= tonumber(ARGV[9]) then reason = ARGV[14] end
    if reason ~= '' and not (e[2] and e[2] ~= '') then
      redis.call('HSET', KEYS[3], 'disabled', reason, 'disabled_at', ARGV[1], 'updated', ARGV[1])
      setSub(KEYS[6], ARGV[16], '1')
    end
    disabled = reason ~= '' or (e[2] and e[2] ~= '')
  end
elseif outcome == 'gone' then
  outcome = 'failed'
end
local new
if status == 'delivered' or outcome == 'delivered' then new = 'delivered'
elseif outcome == 'failed' then new = 'failed'
elseif disabled then new = 'held'
else new = 'pending' end
if new == 'pending' then
  redis.call('HSET', KEYS[1], 'status', new, 'updated', ARGV[1], 'attempts', attempts, 'next', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'status', new, 'updated', ARGV[1], 'attempts', attempts)
  redis.call('HDEL', KEYS[1], 'next')
end
if new == 'held' then redis.call('ZADD', KEYS[4], ARGV[1], ARGV[13]) elseif ARGV[5] == '1' then redis.call('ZREM', KEYS[4], ARGV[13]) end
redis.call('PEXPIRE', KEYS[1], ARGV[11])
redis.call('PEXPIRE', KEYS[2], ARGV[11])
redis.call('PEXPIRE', KEYS[5], ARGV[11])
redis.call('ZREM', KEYS[7], ARGV[13])
return new
`)

// breakerConfig are the breaker's parameters, passed to finish.
type breakerConfig struct {
	threshold         int
	cooldown, maxCool time.Duration
	disableAfter      time.Duration
}

// slotConfig caps the attempts in flight to one target.
type slotConfig struct {
	max int           // 0: no cap
	ttl time.Duration // how long a slot is held at most
}

// releaseSlot gives back the slot r holds, if any: what finish does, for
// an attempt that was interrupted before it could be recorded.
func (s *Store) releaseSlot(ctx context.Context, r Ref) error {
	return s.rdb.ZRem(ctx, s.k.targetSlots(r.Tenant, r.EndpointID), r.DeliveryID).Err()
}

// finish records an attempt and returns the delivery's new status.
func (s *Store) finish(ctx context.Context, r Ref, now time.Time, o outcome, b breakerConfig) (string, error) {
	target, held := s.targetKeys(r)
	isEndpoint := "0"
	if r.EndpointID != "" {
		isEndpoint = "1"
	}
	entry, _ := json.Marshal(o.attempt) // an Attempt always encodes
	var openUntil int64
	if !o.openUntil.IsZero() {
		openUntil = o.openUntil.UnixMilli()
	}
	res, err := finishScript.Run(ctx, s.rdb,
		[]string{s.k.delivery(r.Tenant, r.DeliveryID), s.k.attempts(r.Tenant, r.DeliveryID), target, held, s.k.event(r.Tenant, r.EventID), s.k.subscriptions(r.Tenant), s.k.targetSlots(r.Tenant, r.EndpointID)},
		now.UnixMilli(), o.kind, entry, o.next.UnixMilli(), isEndpoint,
		b.threshold, b.cooldown.Milliseconds(), b.maxCool.Milliseconds(), b.disableAfter.Milliseconds(), openUntil,
		s.cfg.Retention.Milliseconds(), s.cfg.MaxAttemptLog, r.DeliveryID, o.disableMsg, ReasonGone, r.EndpointID,
	).Text()
	if err != nil {
		return "", fmt.Errorf("record delivery attempt: %w", err)
	}
	return res, nil
}
