package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/downstream"
	"github.com/asyncgate/asyncgate/internal/app"
)

// resilienceOptions are the flags of the downstream breakers and bulkheads.
type resilienceOptions struct {
	sharedBreakers   bool
	portfolioBreaker string
	executionBreaker string
	portfolioMax     int
	executionMax     int
}

// register adds the flags to the "Downstream services" group of the commands that
// call downstreams: the breakers for both roles (the API reads portfolios through
// one), the bulkheads for workers.
func (r *resilienceOptions) register(cf *cmdFlags, ro role) {
	g := cf.Group("Downstream services")
	g.Bool(&r.sharedBreakers, "shared-breakers", true,
		"share downstream breaker trips with the other processes through Redis")
	const spec = "KEY=VALUE,..."
	const keys = "settings, any of failure_ratio=0.5,window=10s,min_calls=10,consecutive_failures=5,open_timeout=5s,probes=1"
	g.String(&r.portfolioBreaker, "portfolio-breaker", spec, "", "portfolio breaker "+keys)
	if !ro.worker {
		return
	}
	g.String(&r.executionBreaker, "execution-breaker", spec, "", "execution breaker "+keys)
	g.Int(&r.portfolioMax, "portfolio-max-concurrent", 0, 0, "N",
		"portfolio calls in flight per process (bulkhead); 0: 40% of --concurrency")
	g.Int(&r.executionMax, "execution-max-concurrent", 0, 0, "N",
		"execution calls in flight per process (bulkhead); 0: 40% of --concurrency")
}

// apply puts the settings into cfg.
func (r *resilienceOptions) apply(cfg *app.Config) error {
	var errs []error
	cfg.IsolatedBreakers = !r.sharedBreakers
	var err error
	if cfg.Portfolio.Breaker, err = parseBreaker(r.portfolioBreaker); err != nil {
		errs = append(errs, fmt.Errorf("--portfolio-breaker: %w", err))
	}
	if cfg.Execution.Breaker, err = parseBreaker(r.executionBreaker); err != nil {
		errs = append(errs, fmt.Errorf("--execution-breaker: %w", err))
	}
	if r.portfolioMax < 0 || r.executionMax < 0 {
		errs = append(errs, errors.New("--portfolio-max-concurrent and --execution-max-concurrent must not be negative"))
	}
	cfg.Portfolio.MaxConcurrent, cfg.Execution.MaxConcurrent = r.portfolioMax, r.executionMax
	return errors.Join(errs...)
}

// parseBreaker parses comma-separated key=value settings of a breaker; those left out
// keep their defaults.
func parseBreaker(v string) (downstream.BreakerConfig, error) {
	var b downstream.BreakerConfig
	for _, kv := range strings.Split(v, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return b, fmt.Errorf("%q is not key=value", kv)
		}
		var err error
		switch k {
		case "failure_ratio":
			b.FailureRatio, err = strconv.ParseFloat(val, 64)
			if err == nil && !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
				err = errors.New("must be in (0, 1]")
			}
		case "window":
			b.Interval, err = positiveDuration(val)
		case "open_timeout":
			b.OpenTimeout, err = positiveDuration(val)
		case "min_calls":
			b.MinRequests, err = positiveInt(val)
		case "probes":
			b.HalfOpenProbes, err = positiveInt(val)
		case "consecutive_failures":
			b.ConsecutiveFailures, err = positiveInt(val)
		default:
			return b, fmt.Errorf("unknown setting %q (want failure_ratio, window, min_calls, consecutive_failures, open_timeout or probes)", k)
		}
		if err != nil {
			return b, fmt.Errorf("%s: %w", k, err)
		}
	}
	return b, nil
}

func positiveDuration(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration such as 5s", v)
	}
	return d, nil
}

func positiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%q is not a positive integer", v)
	}
	return n, nil
}

// resilienceConfig reads the breaker and bulkhead flags into cfg, and gives an API the
// portfolio URL, when set, for GET /v1/portfolios.
func (o *options) resilienceConfig(cfg *app.Config, api, worker bool) error {
	var errs []error
	if api && !worker && o.portfolioURL != "" {
		if err := checkURL("portfolio-url", o.portfolioURL); err != nil {
			errs = append(errs, err)
		}
		cfg.Portfolio.BaseURL = o.portfolioURL
	}
	return errors.Join(append(errs, o.resilience.apply(cfg))...)
}
