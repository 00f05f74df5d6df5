package app

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

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

// NewClusterRedis returns a client of a Redis Cluster. url is go-redis's
// cluster URL, naming one or more nodes (the client discovers the others):
//
//	redis://[USER:PASSWORD@]NODE:6379?addr=NODE2:6379&addr=NODE3:6379
//
// Every key a script or MULTI touches carries one hash tag ({tenant},
// {queue}, decision 1), so each runs on one slot; see decisions 68–71.
func NewClusterRedis(rawURL string) (redis.UniversalClient, error) {
	if u, err := url.Parse(rawURL); err == nil && strings.Trim(u.Path, "/") != "" && strings.Trim(u.Path, "/") != "0" {
		return nil, fmt.Errorf("redis cluster url: a Redis Cluster has only database 0, not %s", strings.Trim(u.Path, "/"))
	}
	opt, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis cluster url: %w", err)
	}
	if len(opt.Addrs) == 0 {
		return nil, errors.New("redis cluster url: no node address, such as redis://node1:6379?addr=node2:6379")
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = 128 // per node, like NewRedis's one pool
	}
	return redis.NewClusterClient(opt), nil
}
