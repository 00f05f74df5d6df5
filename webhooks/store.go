package webhooks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// Prefix starts every key. Defaults to "ag:", the order store's.
	Prefix string
	// Guard checks endpoint URLs at registration. Defaults to
	// NewGuard(GuardConfig{}): https only, public addresses only.
	Guard *Guard
	// SecretGrace is how long a rotated-out secret keeps signing alongside
	// the new one. Defaults to 24h.
	SecretGrace time.Duration
	// MaxEndpoints caps a tenant's endpoints. Defaults to 20.
	MaxEndpoints int
	// MaxAttempts is the attempt budget of a new delivery, the first
	// attempt included. Defaults to 8 (DefaultSchedule has 7 retries).
	MaxAttempts int
	// Retention is how long events, deliveries and their attempt logs are
	// kept after their last change. Defaults to 30 days.
	Retention time.Duration
	// EventRetention is how long the event feed lists an event. Defaults
	// to 7 days. Events are stored for the longer of it and Retention.
	EventRetention time.Duration
	// FeedPoll is how often a long-poll of the feed reads again in case an
	// announcement was lost. Defaults to 1s.
	FeedPoll time.Duration
	// MaxEventBytes caps an event's body. Defaults to 256 KiB.
	MaxEventBytes int
	// MaxAttemptLog is how many attempts a delivery's log keeps (the newest).
	// Defaults to 50.
	MaxAttemptLog int
	// Now is the clock. Defaults to time.Now.
	Now func() time.Time
}

func (c StoreConfig) withDefaults() StoreConfig {
	if c.Prefix == "" {
		c.Prefix = "ag:"
	}
	if c.Guard == nil {
		c.Guard = NewGuard(GuardConfig{})
	}
	if c.SecretGrace == 0 {
		c.SecretGrace = 24 * time.Hour
	}
	if c.MaxEndpoints == 0 {
		c.MaxEndpoints = 20
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = len(DefaultSchedule) + 1
	}
	if c.Retention == 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.EventRetention == 0 {
		c.EventRetention = 7 * 24 * time.Hour
	}
	if c.FeedPoll == 0 {
		c.FeedPoll = time.Second
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 256 << 10
	}
	if c.MaxAttemptLog == 0 {
		c.MaxAttemptLog = 50
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Store keeps webhook endpoints, events, deliveries and attempt logs in
// Redis, every key of a tenant under the tenant's hash tag (see keys.go).
type Store struct {
	rdb redis.UniversalClient
	k   keys
	cfg StoreConfig

	feedWatcher atomic.Pointer[FeedWatcher]
	// subs is the subscriptions Publish last found for each tenant.
	subs subsCache
}

// subsCache keeps each tenant's subscriptions hash (endpoint id → the
// subscription as stored) as Publish last found it. Publish's script checks
// the copy it is given against the stored hash, so a copy out of date costs
// a second run, never a wrong delivery. The maps are never changed once
// stored, only replaced.
type subsCache struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

// maxSubsCached bounds the tenants whose subscriptions are kept; past it
// the cache starts again empty.
const maxSubsCached = 10000

func (c *subsCache) get(tenant string) (map[string]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	subs, ok := c.m[tenant]
	return subs, ok
}

func (c *subsCache) put(tenant string, subs map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxSubsCached {
		c.m = map[string]map[string]string{}
	}
	c.m[tenant] = subs
}

// NewStore returns a store on rdb.
func NewStore(rdb redis.UniversalClient, cfg StoreConfig) *Store {
	cfg = cfg.withDefaults()
	return &Store{rdb: rdb, k: keys{cfg.Prefix}, cfg: cfg}
}

// Guard is the store's URL guard.
func (s *Store) Guard() *Guard { return s.cfg.Guard }

// MaxAttempts is the attempt budget of a new delivery.
func (s *Store) MaxAttempts() int { return s.cfg.MaxAttempts }

// CheckURL checks a webhook URL as registration does (see Guard.CheckURL).
func (s *Store) CheckURL(ctx context.Context, raw string) error {
	return s.cfg.Guard.CheckURL(ctx, raw)
}

// createEndpointScript registers an endpoint (KEYS[1..3], ARGV[1..8],
// ARGV[8] its max_per_second) and, given a fourth key, binds it in the
// same run (see Binding): the key goes from ARGV[9] (or nothing) to
// ARGV[10] for ARGV[11] ms. The answer is
// {'ok' or 'full', 1 when the key is bound}. A run that finds its own
// binding ran already (its reply was lost): it answers as then.
var createEndpointScript = redis.NewScript(`
local bind = 0
if #KEYS >= 4 then
  local cur = redis.call('GET', KEYS[4])
  if cur == ARGV[10] then return {'ok', 1} end
  if not cur or cur == ARGV[9] then bind = 1 end
end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[1]) then return {'full', 0} end
redis.call('HSET', KEYS[1], 'id', ARGV[2], 'url', ARGV[3], 'desc', ARGV[4], 'events', ARGV[5],
  'created', ARGV[6], 'updated', ARGV[6], 'secret', ARGV[7], 'mps', ARGV[8])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], '0|' .. ARGV[5] .. '|' .. ARGV[3])
if bind == 1 then redis.call('SET', KEYS[4], ARGV[10], 'PX', ARGV[11]) end
return {'ok', bind}
`)

// Binding ties a key of the caller's (the API's idempotency key) to the
// endpoint CreateEndpointBound registers, in the same script, so that no
// crash can leave the endpoint without the key that names it. The store
// writes the values and never reads them: the key goes from Claim (or from
// not existing) to Value, for TTL; a key that holds anything else (another
// request took it) is left alone. Key must carry the tenant's hash tag.
type Binding struct {
	Key   string
	Claim string
	Value string
	TTL   time.Duration
}

// CreateEndpoint registers an endpoint for the tenant and returns it with
// its new secret, which is shown to its owner this once. It returns a
// *ValidationError for bad fields, an error wrapping ErrInvalidURL or
// ErrURLNotAllowed for a URL the guard refuses, ErrTooManyEndpoints.
func (s *Store) CreateEndpoint(ctx context.Context, tenant string, in EndpointInput) (*Endpoint, Secret, error) {
	ep, secret, _, err := s.CreateEndpointBound(ctx, tenant, in, nil)
	return ep, secret, err
}

// CreateEndpointBound is CreateEndpoint that, with bind not nil, also
// writes the Binding bind returns for the new endpoint and its secret, in
// the same script. bound reports whether the binding's key now holds its
// value.
func (s *Store) CreateEndpointBound(ctx context.Context, tenant string, in EndpointInput, bind func(*Endpoint, Secret) Binding) (ep *Endpoint, secret Secret, bound bool, err error) {
	if err := in.validate(); err != nil {
		return nil, Secret{}, false, err
	}
	if err := s.cfg.Guard.CheckURL(ctx, in.URL); err != nil {
		return nil, Secret{}, false, err
	}
	secret, err = newSecretOf(in.SignatureScheme)
	if err != nil {
		return nil, Secret{}, false, err
	}
	id := "ep_" + uuid.Must(uuid.NewV7()).String()
	now := s.cfg.Now()
	at := time.UnixMilli(now.UnixMilli()).UTC()
	ep = &Endpoint{ID: id, URL: MaskURL(in.URL), Description: in.Description, Events: in.Events, Status: EndpointEnabled, CreatedAt: at, UpdatedAt: at,
		MaxPerSecond: in.MaxPerSecond, SignatureScheme: secret.Scheme(), PublicKey: secret.PublicKey().String()}
	keys := []string{s.k.endpoint(tenant, id), s.k.endpoints(tenant), s.k.subscriptions(tenant)}
	args := []any{s.cfg.MaxEndpoints, id, in.URL, in.Description, joinEvents(in.Events), now.UnixMilli(), secret.String(), in.MaxPerSecond}
	if bind != nil {
		if b := bind(ep, secret); b.Key != "" {
			keys = append(keys, b.Key)
			args = append(args, b.Claim, b.Value, max(1, b.TTL.Milliseconds()))
		}
	}
	res, err := createEndpointScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, Secret{}, false, fmt.Errorf("create webhook endpoint: %w", err)
	}
	if res[0] == "full" {
		return nil, Secret{}, false, fmt.Errorf("%w: at most %d per tenant", ErrTooManyEndpoints, s.cfg.MaxEndpoints)
	}
	return ep, secret, res[1] == int64(1), nil
}

// joinEvents stores a subscription as ",a,b,", so that a script can test
// membership with a plain substring search.
func joinEvents(events []string) string { return "," + strings.Join(events, ",") + "," }

func splitEvents(s string) []string {
	out := []string{}
	for e := range strings.SplitSeq(strings.Trim(s, ","), ",") {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

// endpointRecord is an endpoint as stored, secrets included.
type endpointRecord struct {
	Endpoint
	secret Secret
	prev   []prevSecret // rotated-out secrets, newest first
}

// prevSecret is a rotated-out secret and the end of its grace period.
type prevSecret struct {
	secret Secret
	until  time.Time
}

// secrets returns the secrets that sign now: the current one, and each
// rotated-out one still in its grace period.
func (r *endpointRecord) secrets(now time.Time) []Secret {
	out := []Secret{r.secret}
	for _, p := range r.prev {
		if now.Before(p.until) {
			out = append(out, p.secret)
		}
	}
	return out
}

// setPrev reads the stored rotated-out secrets: the hash fields prev and
// prev_until, space-separated lists in the same order (one secret each
// before several could overlap).
func (r *endpointRecord) setPrev(secrets, untils string) error {
	us := strings.Fields(untils)
	for i, f := range strings.Fields(secrets) {
		sec, err := parseStoredSecret(f)
		if err != nil {
			return err
		}
		p := prevSecret{secret: sec}
		if i < len(us) {
			p.until = msTime(us[i])
		}
		r.prev = append(r.prev, p)
	}
	return nil
}

// prevExpiresAt is the end of the last grace period still running, if any.
func (r *endpointRecord) prevExpiresAt(now time.Time) *time.Time {
	var last *time.Time
	for _, p := range r.prev {
		if now.Before(p.until) && (last == nil || p.until.After(*last)) {
			t := p.until
			last = &t
		}
	}
	return last
}

func decodeEndpoint(h map[string]string, now time.Time) (*endpointRecord, error) {
	if h["id"] == "" {
		return nil, ErrEndpointNotFound
	}
	r := &endpointRecord{Endpoint: Endpoint{
		ID: h["id"], URL: MaskURL(h["url"]), Description: h["desc"], Events: splitEvents(h["events"]),
		Status: EndpointEnabled, CreatedAt: msTime(h["created"]), UpdatedAt: msTime(h["updated"]),
	}}
	if reason := h["disabled"]; reason != "" {
		r.Status, r.DisabledReason = EndpointDisabled, reason
		r.DisabledAt = msTimePtr(h["disabled_at"])
	}
	r.FailingSince = msTimePtr(h["fail_since"])
	r.MaxPerSecond, _ = strconv.Atoi(h["mps"])
	var err error
	if r.secret, err = parseStoredSecret(h["secret"]); err != nil {
		return nil, fmt.Errorf("decode webhook endpoint %s: %w", r.ID, err)
	}
	r.SignatureScheme, r.PublicKey = r.secret.Scheme(), r.secret.PublicKey().String()
	if err := r.setPrev(h["prev"], h["prev_until"]); err != nil {
		return nil, fmt.Errorf("decode webhook endpoint %s: %w", r.ID, err)
	}
	r.PreviousSecretExpiresAt = r.prevExpiresAt(now)
	return r, nil
}

// msTime reads Unix milliseconds; "" or junk is the zero time.
func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func msTimePtr(s string) *time.Time {
	t := msTime(s)
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Store) endpointRecord(ctx context.Context, tenant, id string) (*endpointRecord, error) {
	if !ValidEndpointID(id) {
		return nil, ErrEndpointNotFound
	}
	h, err := s.rdb.HGetAll(ctx, s.k.endpoint(tenant, id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read webhook endpoint: %w", err)
	}
	return decodeEndpoint(h, s.cfg.Now())
}

// Endpoint returns the tenant's endpoint id, or ErrEndpointNotFound.
func (s *Store) Endpoint(ctx context.Context, tenant, id string) (*Endpoint, error) {
	r, err := s.endpointRecord(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	return &r.Endpoint, nil
}

// Endpoints returns every endpoint of the tenant, oldest first.
func (s *Store) Endpoints(ctx context.Context, tenant string) ([]*Endpoint, error) {
	recs, err := s.endpointRecords(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]*Endpoint, len(recs))
	for i, r := range recs {
		out[i] = &r.Endpoint
	}
	return out, nil
}

func (s *Store) endpointRecords(ctx context.Context, tenant string) ([]*endpointRecord, error) {
	ids, err := s.rdb.ZRange(ctx, s.k.endpoints(tenant), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list webhook endpoints: %w", err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	if len(ids) > 0 {
		_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, s.k.endpoint(tenant, id))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list webhook endpoints: %w", err)
		}
	}
	now := s.cfg.Now()
	out := make([]*endpointRecord, 0, len(ids))
	for _, c := range cmds {
		r, err := decodeEndpoint(c.Val(), now)
		if errors.Is(err, ErrEndpointNotFound) {
			continue // deleted between the two reads
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

var deleteEndpointScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return 1
`)

// DeleteEndpoint removes the tenant's endpoint. Its pending deliveries end
// failed when their task next runs. ErrEndpointNotFound.
func (s *Store) DeleteEndpoint(ctx context.Context, tenant, id string) error {
	if !ValidEndpointID(id) {
		return ErrEndpointNotFound
	}
	n, err := deleteEndpointScript.Run(ctx, s.rdb,
		[]string{s.k.endpoint(tenant, id), s.k.endpoints(tenant), s.k.endpointDeliveries(tenant, id), s.k.held(tenant, id), s.k.subscriptions(tenant)}, id).Int()
	if err != nil {
		return fmt.Errorf("delete webhook endpoint: %w", err)
	}
	if n == 0 {
		return ErrEndpointNotFound
	}
	return nil
}

// rotateScript makes the current secret a previous one until ARGV[2] and
// stores the new one. The previous secrets still in their grace period keep
// theirs, so a second rotation in quick succession does not cut short the
// first one's overlap; expired ones are dropped, and beyond maxPrevSecrets
// the oldest. prev and prev_until are space-separated lists, newest first.
var rotateScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'secret')
if ARGV[4] == '1' and not cur then return 0 end
if cur then
  local now, keep = tonumber(ARGV[3]), tonumber(ARGV[5])
  local old = redis.call('HMGET', KEYS[1], 'prev', 'prev_until')
  local ps, us = {cur}, {ARGV[2]}
  local untils = {}
  for u in string.gmatch(old[2] or '', '%S+') do untils[#untils + 1] = u end
  local i = 0
  for p in string.gmatch(old[1] or '', '%S+') do
    i = i + 1
    local u = untils[i]
    if u and tonumber(u) > now and #ps < keep then
      ps[#ps + 1], us[#us + 1] = p, u
    end
  end
  redis.call('HSET', KEYS[1], 'prev', table.concat(ps, ' '), 'prev_until', table.concat(us, ' '))
end
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'updated', ARGV[3])
return 1
`)

// maxPrevSecrets bounds the rotated-out secrets that sign alongside the
// current one (a signature each on every delivery).
const maxPrevSecrets = 5

// RotateSecret gives the endpoint a new secret, returned this once. The
// previous secret keeps signing alongside it for StoreConfig.SecretGrace, so
// that receivers can switch without losing a message. ErrEndpointNotFound.
func (s *Store) RotateSecret(ctx context.Context, tenant, id string) (*Endpoint, Secret, error) {
	if !ValidEndpointID(id) {
		return nil, Secret{}, ErrEndpointNotFound
	}
	rec, err := s.endpointRecord(ctx, tenant, id)
	if err != nil {
		return nil, Secret{}, err
	}
	return s.rotateTo(ctx, tenant, id, rec.SignatureScheme)
}

// rotateTo gives the endpoint a new key of the scheme, the current one
// signing on for StoreConfig.SecretGrace.
func (s *Store) rotateTo(ctx context.Context, tenant, id, scheme string) (*Endpoint, Secret, error) {
	secret, err := newSecretOf(scheme)
	if err != nil {
		return nil, Secret{}, err
	}
	now := s.cfg.Now()
	n, err := rotateScript.Run(ctx, s.rdb, []string{s.k.endpoint(tenant, id)},
		secret.String(), now.Add(s.cfg.SecretGrace).UnixMilli(), now.UnixMilli(), "1", maxPrevSecrets).Int()
	if err != nil {
		return nil, Secret{}, fmt.Errorf("rotate webhook secret: %w", err)
	}
	if n == 0 {
		return nil, Secret{}, ErrEndpointNotFound
	}
	ep, err := s.Endpoint(ctx, tenant, id)
	return ep, secret, err
}

// RotateCallbackSecret gives the tenant a new secret for the events sent to
// its orders' callback_url, returned this once; the previous one keeps
// signing for StoreConfig.SecretGrace. Until a tenant first rotates it, its
// callbacks are signed with a secret nobody was shown.
func (s *Store) RotateCallbackSecret(ctx context.Context, tenant string) (Secret, *time.Time, error) {
	secret, err := NewSecret()
	if err != nil {
		return Secret{}, nil, err
	}
	now := s.cfg.Now()
	until := now.Add(s.cfg.SecretGrace)
	if err := rotateScript.Run(ctx, s.rdb, []string{s.k.callback(tenant)},
		secret.String(), until.UnixMilli(), now.UnixMilli(), "0", maxPrevSecrets).Err(); err != nil {
		return Secret{}, nil, fmt.Errorf("rotate callback secret: %w", err)
	}
	h, err := s.rdb.HMGet(ctx, s.k.callback(tenant), "prev").Result()
	if err != nil || h[0] == nil {
		return secret, nil, nil // the first secret: nothing to overlap with
	}
	until = time.UnixMilli(until.UnixMilli()).UTC()
	return secret, &until, nil
}

// luaSetSub marks an endpoint enabled ('0') or disabled ('1') in the
// subscriptions hash.
const luaSetSub = `
local function setSub(key, id, flag)
  local v = redis.call('HGET', key, id)
  if v then redis.call('HSET', key, id, flag .. string.sub(v, 2)) end
end
`

var disableScript = redis.NewScript(luaSetSub + `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'disabled', ARGV[1], 'disabled_at', ARGV[2], 'updated', ARGV[2])
setSub(KEYS[2], ARGV[3], '1')
return 1
`)

// DisableEndpoint stops deliveries to the endpoint: from now on its
// deliveries are held (kept, not attempted) until it is enabled again.
// ErrEndpointNotFound.
func (s *Store) DisableEndpoint(ctx context.Context, tenant, id, reason string) (*Endpoint, error) {
	if !ValidEndpointID(id) {
		return nil, ErrEndpointNotFound
	}
	if reason == "" {
		reason = ReasonDisabledByUser
	}
	n, err := disableScript.Run(ctx, s.rdb, []string{s.k.endpoint(tenant, id), s.k.subscriptions(tenant)}, reason, s.cfg.Now().UnixMilli(), id).Int()
	if err != nil {
		return nil, fmt.Errorf("disable webhook endpoint: %w", err)
	}
	if n == 0 {
		return nil, ErrEndpointNotFound
	}
	return s.Endpoint(ctx, tenant, id)
}

var enableScript = redis.NewScript(luaSetSub + `
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('HDEL', KEYS[1], 'disabled', 'disabled_at', 'streak', 'fail_since', 'open_until')
redis.call('HSET', KEYS[1], 'updated', ARGV[1])
setSub(KEYS[3], ARGV[2], '0')
local held = redis.call('ZRANGE', KEYS[2], 0, -1)
table.insert(held, 1, 'ok')
return held
`)

// EnableEndpoint lets deliveries to the endpoint go again, with its breaker
// reset, and returns the ids of the deliveries held while it was disabled:
// schedule them with PrepareRedelivery. ErrEndpointNotFound.
func (s *Store) EnableEndpoint(ctx context.Context, tenant, id string) (*Endpoint, []string, error) {
	if !ValidEndpointID(id) {
		return nil, nil, ErrEndpointNotFound
	}
	res, err := enableScript.Run(ctx, s.rdb, []string{s.k.endpoint(tenant, id), s.k.held(tenant, id), s.k.subscriptions(tenant)}, s.cfg.Now().UnixMilli(), id).StringSlice()
	if err != nil {
		return nil, nil, fmt.Errorf("enable webhook endpoint: %w", err)
	}
	if len(res) == 0 {
		return nil, nil, ErrEndpointNotFound
	}
	ep, err := s.Endpoint(ctx, tenant, id)
	return ep, slices.Clone(res[1:]), err
}
