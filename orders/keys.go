package orders

// Redis keys of the order store, all built here.
//
// Every key of one tenant's orders carries the hash tag {tenant}, so that
// one script can change an order, its log and the tenant's indexes
// atomically, on a single Redis and on Redis Cluster alike:
//
//	ag:{T}:o:ID          hash   the order: doc (JSON), status, seq, fence, lease, flags
//	ag:{T}:o:ID:ev       list   the order's event log (JSON events, oldest first)
//	ag:{T}:idx           zset   every order id, score 0, read newest first by lex order (ids are UUIDv7)
//	ag:{T}:idx:STATUS    zset   the ids currently in STATUS, same shape
//	ag:{T}:active        zset   in-flight ids, score = creation time in ms (the reconciler's work list)
//	ag:{T}:coid          hash   client_order_id → order id
//	ag:{T}:releases      zset   ended orders whose funds still await release, score = ms when recorded
//	ag:{T}:outbox        zset   ended orders whose webhook event is not yet fanned out, score = ms when ended
//	ag:tenants           set    every tenant that has placed an order (not tagged: written apart)
//	ag:orders:changed    pub/sub channel, message "T/ID" after each change
type keys struct{ prefix string }

func (k keys) tenant(t string) string                { return k.prefix + "{" + t + "}:" }
func (k keys) order(t, id string) string             { return k.tenant(t) + "o:" + id }
func (k keys) events(t, id string) string            { return k.tenant(t) + "o:" + id + ":ev" }
func (k keys) index(t string) string                 { return k.tenant(t) + "idx" }
func (k keys) statusIndex(t string, s Status) string { return k.tenant(t) + "idx:" + string(s) }
func (k keys) active(t string) string                { return k.tenant(t) + "active" }
func (k keys) releases(t string) string              { return k.tenant(t) + "releases" }
func (k keys) outbox(t string) string                { return k.tenant(t) + "outbox" }
func (k keys) clientIDs(t string) string             { return k.tenant(t) + "coid" }
func (k keys) tenants() string                       { return k.prefix + "tenants" }
func (k keys) changed() string                       { return k.prefix + "orders:changed" }
