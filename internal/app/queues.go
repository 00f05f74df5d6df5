package app

import (
	"net/http"

	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/admin"
)

// sharedRedis hands asynqmon the app's own Redis client (any
// UniversalClient: a single Redis, Sentinel or Cluster) instead of options
// to dial another pool. asynqmon's Close would close it: it is never
// called, the owner of the client closes it.
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// queuesUI is the queue dashboard (asynqmon) at admin.QueuesRoot, with
// task payloads and results redacted by admin.RedactPayload; readOnly
// refuses every change (pause, run, delete, archive) with 405.
func queuesUI(rdb redis.UniversalClient, readOnly bool) http.Handler {
	return asynqmon.New(asynqmon.Options{
		RootPath:         admin.QueuesRoot,
		RedisConnOpt:     sharedRedis{rdb},
		ReadOnly:         readOnly,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(admin.RedactPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(admin.RedactPayload),
	})
}
