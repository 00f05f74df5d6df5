package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/asyncgate/asyncgate/apikeys"
)

const keysUsage = `usage: asyncgate keys <create|list|revoke> [flags]

  create --tenant T [--name N] [--admin]   issue a key; its secret is shown once
  list [--tenant T] [--json]               the keys, without their secrets
  revoke ID                                revoke a key (servers drop it within --key-cache-ttl, 30s by default)

Every subcommand takes --redis URL (env ASYNCGATE_REDIS), or --redis-sentinel URL
(env ASYNCGATE_REDIS_SENTINEL) for a Sentinel-managed master, or --redis-cluster URL
(env ASYNCGATE_REDIS_CLUSTER) for a Redis Cluster.
`

// runKeys manages the API keys kept in Redis.
func runKeys(ctx context.Context, args []string, stdout io.Writer, getenv func(string) string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, keysUsage)
		if len(args) == 0 {
			return errors.New("keys: no subcommand given")
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	fs.StringVar(&o.redisURL, "redis", getenv("ASYNCGATE_REDIS"), "Redis URL, such as redis://localhost:6379/0 (env ASYNCGATE_REDIS)")
	fs.StringVar(&o.redisSentinel, "redis-sentinel", getenv("ASYNCGATE_REDIS_SENTINEL"), "instead of --redis: a Sentinel-managed master, such as redis://sentinel:26379/0?master_name=mymaster (env ASYNCGATE_REDIS_SENTINEL)")
	fs.StringVar(&o.redisCluster, "redis-cluster", getenv("ASYNCGATE_REDIS_CLUSTER"), "instead of --redis: a Redis Cluster, such as redis://node1:6379?addr=node2:6379&addr=node3:6379 (env ASYNCGATE_REDIS_CLUSTER)")
	var (
		tenant, name  string
		admin, asJSON bool
		id            string
	)
	switch sub {
	case "create":
		fs.StringVar(&tenant, "tenant", "", "the tenant the key belongs to (required)")
		fs.StringVar(&name, "name", "", "what the key is for")
		fs.BoolVar(&admin, "admin", false, "an admin key: it also reaches /admin")
	case "list":
		fs.StringVar(&tenant, "tenant", "", "only this tenant's keys")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	case "revoke":
		// The id may come before or after the flags.
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			id, args = args[0], args[1:]
		}
	default:
		fmt.Fprint(stdout, keysUsage)
		return fmt.Errorf("keys: unknown subcommand %q", sub)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if sub == "revoke" && id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("keys %s: unexpected arguments: %v", sub, fs.Args())
	}
	if err := o.checkRedis(); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	rdb, _, err := o.newRedis()
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store := apikeys.NewStore(rdb, apikeys.Config{})

	switch sub {
	case "create":
		if tenant == "" {
			return errors.New("keys create: --tenant is required")
		}
		k, secret, err := store.Create(ctx, apikeys.CreateParams{Tenant: tenant, Name: name, Admin: admin})
		if err != nil {
			return fmt.Errorf("keys create: %w", err)
		}
		kind := "API key"
		if k.Admin {
			kind = "admin key"
		}
		fmt.Fprintf(stdout, "Created %s %s for tenant %q.\n\n  %s\n\nStore it now: it is shown only this once. Send it as 'Authorization: Bearer <key>'.\n",
			kind, k.ID, k.Tenant, secret.Reveal())
		return nil
	case "list":
		keys, err := store.List(ctx, tenant)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(keys)
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTENANT\tNAME\tADMIN\tKEY\tCREATED\tLAST USED")
		for _, k := range keys {
			last := "never"
			if !k.LastUsedAt.IsZero() {
				last = k.LastUsedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s…\t%s\t%s\n", k.ID, k.Tenant, k.Name, k.Admin, k.Prefix, k.CreatedAt.Format(time.RFC3339), last)
		}
		return tw.Flush()
	default: // revoke
		if id == "" {
			return errors.New("keys revoke: give the key's id (see keys list)")
		}
		if err := store.Revoke(ctx, id); err != nil {
			if errors.Is(err, apikeys.ErrNotFound) {
				return fmt.Errorf("keys revoke: no key %s", id)
			}
			return fmt.Errorf("keys revoke: %w", err)
		}
		fmt.Fprintf(stdout, "Revoked %s. Running servers refuse it once their key cache expires (--key-cache-ttl, 30s by default).\n", id)
		return nil
	}
}
