package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/asyncgate/asyncgate/internal/redisslot"
)

// Slot is the Redis Cluster hash slot of key (redisslot.Of).
func Slot(key string) int { return redisslot.Of(key) }

// CheckSlots makes c report, when the test ends, every script (EVAL, EVALSHA
// and their _RO forms, FCALL) and every MULTI … EXEC it sent whose keys are
// not all in one hash slot: on a Redis Cluster each would fail with
// CROSSSLOT. It lets a test on one Redis prove what a cluster requires. (A
// script's keys are those it declares; keys a script builds itself are not
// seen here, only on a real cluster.) Call it before anything that uses c
// is started, so that its report runs after they stopped.
func CheckSlots(t testing.TB, c *redis.Client) {
	t.Helper()
	h := &slotHook{}
	c.AddHook(h)
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, v := range h.bad {
			t.Errorf("redistest: keys of several hash slots in one %s", v)
		}
	})
}

type slotHook struct {
	mu  sync.Mutex
	bad []string
}

func (h *slotHook) report(what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.bad) < 20 {
		h.bad = append(h.bad, what)
	}
}

func (h *slotHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *slotHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.checkScript(cmd)
		return next(ctx, cmd)
	}
}

func (h *slotHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.checkScript(c)
		}
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			var keys []string
			for _, c := range cmds[1:] {
				if a := c.Args(); len(a) > 1 && c.Name() != "exec" {
					if ks, ok := scriptKeys(c); ok {
						keys = append(keys, ks...)
					} else {
						keys = append(keys, fmt.Sprint(a[1])) // the first key of the usual commands
					}
				}
			}
			if !oneSlot(keys) {
				h.report(fmt.Sprintf("MULTI: %v", keys))
			}
		}
		return next(ctx, cmds)
	}
}

func (h *slotHook) checkScript(cmd redis.Cmder) {
	if keys, ok := scriptKeys(cmd); ok && !oneSlot(keys) {
		h.report(fmt.Sprintf("%s: %v", strings.ToUpper(cmd.Name()), keys))
	}
}

// scriptKeys are the keys a script or function call declares.
func scriptKeys(cmd redis.Cmder) ([]string, bool) {
	switch cmd.Name() {
	case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
	default:
		return nil, false
	}
	a := cmd.Args()
	if len(a) < 3 {
		return nil, false
	}
	n, err := strconv.Atoi(fmt.Sprint(a[2]))
	if err != nil || len(a) < 3+n {
		return nil, false
	}
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprint(a[3+i])
	}
	return keys, true
}

func oneSlot(keys []string) bool {
	for _, k := range keys[min(1, len(keys)):] {
		if Slot(k) != Slot(keys[0]) {
			return false
		}
	}
	return true
}
