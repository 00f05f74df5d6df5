package downstream

import "strconv"

// Redis keys of the downstream package, all built here. Prefix is "ag:" unless configured
// otherwise ([SharedConfig].Prefix, [ReaderConfig].Prefix).
//
// The keys of one downstream's breaker share the hash tag {NAME}, so that one script can
// change both on a single Redis and on Redis Cluster alike; a tenant's cached views carry
// the tenant's hash tag {T}, as the order keys do:
//
//	ag:breaker:{NAME}          string  the cluster's trip of NAME: open-until in Unix ms; kept from the
//	                                   trip until a good probe closes the breaker (half-open in between)
//	ag:breaker:{NAME}:probe    string  the half-open probe lock: the instance taking the probe, with a TTL
//	ag:breaker:events[:DB]     pub/sub channel of trip and close notices (JSON, see [notice]);
//	                           pub/sub ignores logical databases, so the channel names
//	                           the database of the client when it is not 0
//	ag:{T}:pf:ACCOUNT          string  tenant T's last good view of ACCOUNT (JSON), with a TTL
type keys struct{ prefix string }

func (k keys) breaker(name string) string { return k.prefix + "breaker:{" + name + "}" }
func (k keys) probe(name string) string   { return k.prefix + "breaker:{" + name + "}:probe" }
func (k keys) events(db int) string {
	if db != 0 {
		return k.prefix + "breaker:events:" + strconv.Itoa(db)
	}
	return k.prefix + "breaker:events"
}
func (k keys) view(tenant, account string) string { return k.prefix + "{" + tenant + "}:pf:" + account }
