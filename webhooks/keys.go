package webhooks

// Redis keys of the webhook store, all built here.
//
// Every key of one tenant's webhooks carries the tenant's hash tag {T}, the
// same tag as the tenant's orders (orders/keys.go), so that one script can
// change an endpoint, its deliveries and their indexes atomically, on a
// single Redis and on Redis Cluster alike:
//
//	ag:{T}:wh:eps            zset   endpoint ids, score 0, lex order = creation order (ids hold a UUIDv7)
//	ag:{T}:wh:ep:ID          hash   an endpoint: url, events, description, secrets ("whsec_…"), disabled reason, breaker state
//	ag:{T}:wh:subs           hash   endpoint id → "<0, or 1 if disabled>|<,events,>|<url>": what a fan-out reads, in one command
//	ag:{T}:wh:ep:ID:dlv      zset   the endpoint's delivery ids, score 0, lex order = creation order
//	ag:{T}:wh:ep:ID:held     zset   deliveries held while the endpoint is disabled, score = ms when held
//	ag:{T}:wh:ep:ID:slots    zset   the endpoint's delivery slots: delivery ids attempting now, score = ms when the slot expires
//	ag:{T}:wh:ep:ID:rate     string the endpoint's max_per_second limiter: its GCRA theoretical arrival time, ms
//	ag:{T}:wh:cb             hash   the tenant's callback_url secrets (current, previous and its end)
//	ag:{T}:wh:cb:slots       zset   the delivery slots of the tenant's callback_url deliveries, as ep:ID:slots
//	ag:{T}:wh:cb:dlv         zset   the tenant's callback_url delivery ids, same shape as ep:ID:dlv
//	ag:{T}:wh:evt:ID         hash   an event: the body as sent, its type, its delivery ids
//	ag:{T}:wh:dlv:ID         hash   a delivery: event, target, status, attempt count and budget, next attempt
//	ag:{T}:wh:dlv:ID:att     list   the delivery's attempt log (JSON), oldest first, capped
//	ag:{T}:wh:rcv:ID         hash   a recovery (redelivery of an endpoint's failed deliveries): status and counts
//	ag:{T}:wh:feed           stream the tenant's event feed: one entry {e: event id} per stored event, trimmed by EventRetention
//	ag:wh:feed               pub/sub channel, message "T" after each event stored (wakes feed long-polls)
//
// Events, deliveries and attempt logs expire after StoreConfig.Retention;
// index entries whose delivery expired are skipped on read and trimmed on
// write.
type keys struct{ prefix string }

func (k keys) tenant(t string) string                 { return k.prefix + "{" + t + "}:wh:" }
func (k keys) endpoints(t string) string              { return k.tenant(t) + "eps" }
func (k keys) subscriptions(t string) string          { return k.tenant(t) + "subs" }
func (k keys) endpoint(t, id string) string           { return k.tenant(t) + "ep:" + id }
func (k keys) endpointDeliveries(t, id string) string { return k.tenant(t) + "ep:" + id + ":dlv" }
func (k keys) held(t, id string) string               { return k.tenant(t) + "ep:" + id + ":held" }
func (k keys) slots(t, id string) string              { return k.tenant(t) + "ep:" + id + ":slots" }
func (k keys) callback(t string) string               { return k.tenant(t) + "cb" }
func (k keys) callbackDeliveries(t string) string     { return k.tenant(t) + "cb:dlv" }
func (k keys) event(t, id string) string              { return k.tenant(t) + "evt:" + id }
func (k keys) delivery(t, id string) string           { return k.tenant(t) + "dlv:" + id }
func (k keys) rate(t, endpointID string) string {
	if endpointID == "" {
		return k.tenant(t) + "cb:rate" // unused: callback URLs have no cap; a key of the same slot
	}
	return k.tenant(t) + "ep:" + endpointID + ":rate"
}
func (k keys) recovery(t, id string) string { return k.tenant(t) + "rcv:" + id }
func (k keys) feed(t string) string         { return k.tenant(t) + "feed" }
func (k keys) feedChannel() string          { return k.prefix + "wh:feed" }
func (k keys) attempts(t, id string) string { return k.tenant(t) + "dlv:" + id + ":att" }

// targetSlots is the slot set of a delivery to target: the endpoint's, or
// the tenant's callback_url deliveries' (all callback URLs of a tenant
// share one set).
func (k keys) targetSlots(t, endpointID string) string {
	if endpointID == "" {
		return k.tenant(t) + "cb:slots"
	}
	return k.slots(t, endpointID)
}

// deliveryIndex is the index a delivery to target is listed in.
func (k keys) deliveryIndex(t, endpointID string) string {
	if endpointID == "" {
		return k.callbackDeliveries(t)
	}
	return k.endpointDeliveries(t, endpointID)
}
