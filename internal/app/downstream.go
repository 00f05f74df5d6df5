package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/server"
)

// defaultWorkerConcurrency is jobs.WorkerConfig's default Concurrency.
const defaultWorkerConcurrency = 50

// downstreamConfig completes the Config of a downstream client: logger, shared breaker,
// and a bulkhead below the worker's concurrency, so that one slow downstream cannot hold
// every handler (other queues, the other downstream, keep flowing).
func (a *App) downstreamConfig(c downstream.Config) downstream.Config {
	c.Logger = a.cfg.Logger
	c.Shared = a.shared
	if c.MaxConcurrent == 0 {
		n := a.cfg.WorkerPool.Concurrency
		if n == 0 {
			n = defaultWorkerConcurrency
		}
		c.MaxConcurrent = max(1, n*2/5)
	}
	return c
}

// newPortfolioReader returns the reader of GET /v1/portfolios: its own portfolio client
// with a short timeout and a single attempt (the caller waits), its breaker shared with
// the other processes, and a cache of good views in Redis. Nil without a portfolio URL.
func (a *App) newPortfolioReader() (*downstream.Reader, error) {
	if a.cfg.Portfolio.BaseURL == "" {
		return nil, nil
	}
	timeout := a.cfg.PortfolioReadTimeout
	if timeout == 0 {
		timeout = time.Second
	}
	c := a.cfg.Portfolio
	c.Timeout, c.Budget, c.MaxAttempts = timeout, timeout, 1
	c.Logger, c.Shared = a.cfg.Logger, a.shared
	p, err := downstream.NewPortfolio(c)
	if err != nil {
		return nil, fmt.Errorf("portfolio reader: %w", err)
	}
	return downstream.NewReader(p, a.cfg.Redis, downstream.ReaderConfig{Logger: a.cfg.Logger}), nil
}

// portfolioReader adapts a downstream.Reader to the server.
type portfolioReader struct{ r *downstream.Reader }

func (p portfolioReader) ReadPortfolio(ctx context.Context, tenant, accountID string) (server.Portfolio, error) {
	s, err := p.r.Read(ctx, tenant, accountID)
	if err != nil {
		if errors.Is(err, downstream.ErrUnknownAccount) {
			return server.Portfolio{}, fmt.Errorf("%w: %w", server.ErrAccountNotFound, err)
		}
		if downstream.IsTransient(err) {
			d, _ := downstream.RetryAfter(err)
			return server.Portfolio{}, &server.UnavailableError{Service: "portfolio", RetryAfter: d, Err: err}
		}
		return server.Portfolio{}, err
	}
	return server.Portfolio{AccountID: s.AccountID, Cash: s.Cash, Reserved: s.Reserved, Available: s.Available,
		AsOf: s.AsOf, Stale: s.Stale}, nil
}

// breakerReport is the readiness detail of the downstream breakers: what this process's
// breakers say, and for a downstream it does not call, the trip recorded in Redis.
type breakerReport struct{ a *App }

func (r breakerReport) Breakers(ctx context.Context) map[string]server.BreakerState {
	local := make(map[string]downstream.BreakerStatus)
	for _, st := range r.a.breakerStatuses() {
		if cur, ok := local[st.Downstream]; !ok || severity(st.State) > severity(cur.State) {
			local[st.Downstream] = st
		}
	}
	out := make(map[string]server.BreakerState)
	for _, name := range []string{"portfolio", "execution"} {
		st, ok := local[name]
		if !ok && r.a.shared != nil {
			shared, err := r.a.shared.Status(ctx, name)
			if err != nil {
				out[name] = server.BreakerState{State: "unknown"}
				continue
			}
			st, ok = downstream.BreakerStatus{Downstream: name, State: gobreaker.StateClosed}, true
			switch {
			case shared.Tripped && shared.OpenUntil.After(time.Now()):
				st.State, st.OpenUntil = gobreaker.StateOpen, shared.OpenUntil
			case shared.Tripped:
				st.State = gobreaker.StateHalfOpen
			}
		}
		if !ok {
			continue
		}
		bs := server.BreakerState{State: st.State.String()}
		if !st.OpenUntil.IsZero() {
			until := st.OpenUntil.UTC()
			bs.OpenUntil = &until
		}
		out[name] = bs
	}
	return out
}

func severity(s gobreaker.State) int {
	switch s {
	case gobreaker.StateOpen:
		return 2
	case gobreaker.StateHalfOpen:
		return 1
	}
	return 0
}

// breakerStatuses lists the breakers of this process's clients.
func (a *App) breakerStatuses() []downstream.BreakerStatus {
	var out []downstream.BreakerStatus
	if a.Portfolio != nil {
		out = append(out, a.Portfolio.Breaker())
	}
	if a.Execution != nil {
		out = append(out, a.Execution.Breaker())
	}
	if a.reader != nil {
		out = append(out, a.reader.Breaker())
	}
	return out
}
