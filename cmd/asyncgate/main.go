// Command asyncgate runs the asynchronous order gateway.
//
//	asyncgate dev                 everything in one process, in-memory Redis, simulator
//	asyncgate serve  --redis URL  API and worker against Redis
//	asyncgate api    --redis URL  the HTTP API only
//	asyncgate worker --redis URL  the order workers and reconciler only
//	asyncgate sim    --addr :9090 the portfolio and execution simulator
//	asyncgate keys   create|list|revoke   API keys in Redis
//	asyncgate listen --forward-to URL     forward your event feed to a local receiver
//	asyncgate receive             a webhook receiver that verifies signatures
//
// Every flag can also be set by environment: --redis is ASYNCGATE_REDIS,
// --api-keys is ASYNCGATE_API_KEYS, and so on. 'asyncgate help CMD' and
// 'asyncgate CMD -h' list a command's flags.
package main

import (
	"context"
	"errors"
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
  keys     create, list and revoke API keys
  listen   forward your events to a local receiver, signed (develop a receiver on a laptop)
  receive  a webhook receiver that verifies signatures, for trying asyncgate out

Run 'asyncgate help <command>' or 'asyncgate <command> -h' for its flags.
`

// run runs the command of args. Help (-h, --help, help [CMD]) prints the
// usage and returns nil without starting anything.
func run(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	err := dispatch(ctx, args, stdout, getenv)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) < 2 {
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("no command given")
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, getenv)
	case "serve", "api", "worker":
		return runServe(ctx, cmd, rest, stdout, getenv)
	case "sim":
		return runSim(ctx, rest, stdout, getenv)
	case "keys":
		return runKeys(ctx, rest, stdout, getenv)
	case "listen":
		return runListen(ctx, rest, stdout, getenv)
	case "receive":
		return runReceive(ctx, rest, stdout, getenv)
	case "help", "-h", "-help", "--help":
		if cmd == "help" && len(rest) > 0 {
			// asyncgate help CMD [SUB]: CMD's own help, never CMD itself.
			return dispatch(ctx, append([]string{args[0], rest[0]}, append(rest[1:], "-h")...), stdout, getenv)
		}
		fmt.Fprint(stdout, usage)
		return errHelp
	default:
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
