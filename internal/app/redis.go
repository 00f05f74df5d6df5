package app

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// NewSentinelRedis returns a client of the master that Redis Sentinel names,
// following it through failovers. url is go-redis's failover URL:
//
//	redis://[SENTINEL_USER:SENTINEL_PASSWORD@]SENTINEL:26379[/DB]?master_name=NAME[&addr=SENTINEL2:26379...][&password=MASTER_PASSWORD]
//
// The client is a *redis.Client like NewRedis's: everything built on one
// Redis (Lua scripts, MULTI, WAIT, Asynq) works on it unchanged.
func NewSentinelRedis(url string) (redis.UniversalClient, error) {
	opt, err := redis.ParseFailoverURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis sentinel url: %w", err)
	}
	if opt.MasterName == "" {
		return nil, errors.New("redis sentinel url: master_name is missing, such as redis://sentinel:26379/0?master_name=mymaster")
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = 128
	}
	return redis.NewFailoverClient(opt), nil
}
