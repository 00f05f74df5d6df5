// Command asyncgate runs the asynchronous order gateway.
//
//	asyncgate dev                 everything in one process, in-memory Redis, simulator
//	asyncgate serve  --redis URL  API and worker against Redis
//	asyncgate api    --redis URL  the HTTP API only
//	asyncgate worker --redis URL  the order workers and reconciler only
//	asyncgate sim    --addr :9090 the portfolio and execution simulator
//	asyncgate keys   create|list|revoke   API keys in Redis
//
// Every flag can also be set by environment: --redis is ASYNCGATE_REDIS,
// --api-keys is ASYNCGATE_API_KEYS, and so on.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout, os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "asyncgate:", err)
		os.Exit(1)
	}
}

const usage = `usage: asyncgate <command> [flags]

commands:
  dev      run everything in one process: in-memory Redis (or --redis), simulator, API, workers
  serve    run the API and the workers against Redis
  api      run the HTTP API only
  worker   run the order workers and the reconciler only
  sim      run the portfolio and execution simulator
  keys     create, list and revoke API keys (asyncgate keys -h)

Run 'asyncgate <command> -h' for its flags.
`

func run(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) < 2 {
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("no command given")
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, getenv)
	case "serve":
		return runServe(ctx, rest, stdout, getenv, true, true)
	case "api":
		return runServe(ctx, rest, stdout, getenv, true, false)
	case "worker":
		return runServe(ctx, rest, stdout, getenv, false, true)
	case "sim":
		return runSim(ctx, rest, stdout, getenv)
	case "keys":
		return runKeys(ctx, rest, stdout, getenv)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
