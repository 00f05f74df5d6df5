package server

// Redis keys of the API, all built here:
//
//	ag:{T}:idem:KEY          string  the Idempotency-Key KEY of tenant T: a claim
//	                                 while in flight, then the recorded answer (JSON),
//	                                 or, for an order, its binding {"fp","order"},
//	                                 written by the store's create script
//	rate:ag:{T}:rl:KEY_ID    string  GCRA state of the API key KEY_ID (the "rate:"
//	                                 prefix is go-redis/redis_rate's)
//
// Both carry the tenant's hash tag {T}, like the tenant's orders
// (orders/keys.go): a tenant's state lives in one Redis Cluster slot.
type redisKeys struct{ prefix string }

func (k redisKeys) tenant(t string) string           { return k.prefix + "{" + t + "}:" }
func (k redisKeys) idempotency(t, key string) string { return k.tenant(t) + "idem:" + key }
func (k redisKeys) rateLimit(t, keyID string) string { return k.tenant(t) + "rl:" + keyID }
