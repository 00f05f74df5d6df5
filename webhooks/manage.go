package webhooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ErrEndpointRateLimited: the endpoint's max_per_second allows no attempt
// now; the delivery waits its turn without spending an attempt.
var ErrEndpointRateLimited = errors.New("the webhook endpoint's max_per_second is reached")

// luaRateLimit is the endpoint's max_per_second as a GCRA (the generic cell
// rate algorithm, as go-redis/redis_rate uses for the API's limits, here
// inside the begin script so that the check costs no round trip): one
// attempt every 1000/mps ms, bursts of up to mps in a second. luaRate
// answers 0 (no cap), the new arrival time to store once the attempt goes,
// or minus the time (ms) when an attempt will be allowed.
const luaRateLimit = `
local function luaRate(key, mps, now)
  if mps <= 0 then return 0 end
  local t = 1000 / mps
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  if tat + t - 1000 > now then return -(tat + t - 1000) end
  return tat + t
end
`

// updateEndpointScript sets the given fields (ARGV[2..], name/value pairs,
// ARGV[1] of them), rewrites the endpoint's entry in the subscriptions hash
// from the result (what fan-outs read), and, when the URL changed, resets
// the breaker: a new receiver starts with a clean record.
var updateEndpointScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[1])
local old = redis.call('HGET', KEYS[1], 'url')
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[2 + 2*i], ARGV[3 + 2*i]) end
local now, id = ARGV[2 + 2*n], ARGV[3 + 2*n]
redis.call('HSET', KEYS[1], 'updated', now)
local e = redis.call('HMGET', KEYS[1], 'events', 'url', 'disabled')
if e[2] ~= old then redis.call('HDEL', KEYS[1], 'streak', 'fail_since', 'open_until') end
local flag = '0'
if e[3] and e[3] ~= '' then flag = '1' end
redis.call('HSET', KEYS[2], id, flag .. '|' .. e[1] .. '|' .. e[2])
return 1
`)

// UpdateEndpoint changes the fields of the tenant's endpoint that p gives:
// its URL (checked as at registration; a new URL resets the breaker), its
// event types (events already published keep their deliveries), its
// description and its rate cap. It returns the endpoint as it then stands,
// a *ValidationError, an error wrapping ErrInvalidURL or ErrURLNotAllowed,
// ErrEndpointNotFound.
func (s *Store) UpdateEndpoint(ctx context.Context, tenant, id string, p EndpointPatch) (*Endpoint, error) {
	if !ValidEndpointID(id) {
		return nil, ErrEndpointNotFound
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	var fields []any
	if p.URL != nil {
		if err := s.cfg.Guard.CheckURL(ctx, *p.URL); err != nil {
			return nil, err
		}
		fields = append(fields, "url", *p.URL)
	}
	if p.Events != nil {
		fields = append(fields, "events", joinEvents(*p.Events))
	}
	if p.Description != nil {
		fields = append(fields, "desc", *p.Description)
	}
	if p.MaxPerSecond != nil {
		fields = append(fields, "mps", *p.MaxPerSecond)
	}
	args := append(append([]any{len(fields) / 2}, fields...), s.cfg.Now().UnixMilli(), id)
	n, err := updateEndpointScript.Run(ctx, s.rdb, []string{s.k.endpoint(tenant, id), s.k.subscriptions(tenant)}, args...).Int()
	if err != nil {
		return nil, fmt.Errorf("update webhook endpoint: %w", err)
	}
	if n == 0 {
		return nil, ErrEndpointNotFound
	}
	return s.Endpoint(ctx, tenant, id)
}
