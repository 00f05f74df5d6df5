package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/asyncgate/asyncgate/internal/human"
)

// errHelp is returned by a command whose help was asked for (-h, --help):
// the usage has been printed and nothing runs. run turns it into success.
var errHelp = errors.New("help shown")

// cmdFlags is one command's flags, registered under headings (flag groups)
// so that its help lists exactly the flags the command reads, grouped, each
// with its ASYNCGATE_* variable and default.
//
// Adding a flag: pick the group (cf.Group("Workers") returns the existing
// group of that title, or starts a new heading), then register it with the
// typed method, inside the role test of the commands that read it:
//
//	if c.worker {
//		g := cf.Group("Workers")
//		g.Int(&o.concurrency, "concurrency", 50, 1, "N", "order tasks run at once per worker")
//	}
//
// The environment variable (ASYNCGATE_CONCURRENCY), its parse error and the
// help line come for free. Values that need parsing beyond these types use
// Func with the accepted forms spelled out in the usage.
type cmdFlags struct {
	cmd    string
	fs     *flag.FlagSet
	getenv func(string) string
	groups []*flagGroup
	envErr error // bad ASYNCGATE_* values, reported with the other config errors
	setErr error // the first bad command-line value, with the flag's name
}

// flagGroup is a heading of a command's help and the flags under it.
type flagGroup struct {
	c     *cmdFlags
	title string
	docs  []flagDoc
}

type flagDoc struct{ name, arg, usage, def string }

func newCmdFlags(cmd string, getenv func(string) string) *cmdFlags {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // our usage, our errors
	fs.Usage = func() {}
	return &cmdFlags{cmd: cmd, fs: fs, getenv: getenv}
}

// envName is the environment variable of a flag: --rate-limit is ASYNCGATE_RATE_LIMIT.
func envName(flagName string) string {
	return "ASYNCGATE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Group returns the group titled title, adding it after the others if new.
func (c *cmdFlags) Group(title string) *flagGroup {
	for _, g := range c.groups {
		if g.title == title {
			return g
		}
	}
	g := &flagGroup{c: c, title: title}
	c.groups = append(c.groups, g)
	return g
}

// Func registers a flag whose value set parses (its error should say what
// is wanted, such as `want a duration such as 30s`). def is the default as
// shown in the help ("" shows none); arg names the value in the help.
// A set ASYNCGATE_* variable is parsed now, as if given first on the command line.
func (g *flagGroup) Func(name, arg, def, usage string, set func(string) error) {
	g.add(&funcValue{set: set, def: def}, name, arg, def, usage)
}

func (g *flagGroup) add(v flag.Value, name, arg, def, usage string) {
	c := g.c
	c.fs.Var(&namedValue{Value: v, c: c, name: name}, name, usage)
	g.docs = append(g.docs, flagDoc{name: name, arg: arg, usage: usage, def: def})
	if s := c.getenv(envName(name)); s != "" {
		if err := v.Set(s); err != nil {
			c.envErr = errors.Join(c.envErr, fmt.Errorf("%s (--%s): %v", envName(name), name, err))
		}
	}
}

// String registers a string flag.
func (g *flagGroup) String(p *string, name, arg, def, usage string) {
	*p = def
	g.Func(name, arg, def, usage, func(s string) error { *p = s; return nil })
}

// Bool registers a boolean flag (--name, --name=false).
func (g *flagGroup) Bool(p *bool, name string, def bool, usage string) {
	*p = def
	g.add(&boolValue{p: p}, name, "", strconv.FormatBool(def), usage)
}

// Int registers an integer flag of at least minimum.
func (g *flagGroup) Int(p *int, name string, def, minimum int, arg, usage string) {
	*p = def
	g.Func(name, arg, strconv.Itoa(def), usage, func(s string) error {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < minimum {
			return fmt.Errorf("want a whole number of at least %d, such as %d, not %q", minimum, max(def, minimum), s)
		}
		*p = n
		return nil
	})
}

// Duration registers a positive duration flag (30s, 1.5s, 15m, 2h).
func (g *flagGroup) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	g.Func(name, "DURATION", human.Duration(def), usage, func(s string) error {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d <= 0 {
			return fmt.Errorf("want a positive duration such as %s, 30s or 1h30m, not %q", human.Duration(def), s)
		}
		*p = d
		return nil
	})
}

type funcValue struct {
	set func(string) error
	def string
}

func (f *funcValue) Set(s string) error { return f.set(s) }
func (f *funcValue) String() string     { return f.def }

type boolValue struct{ p *bool }

func (b *boolValue) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, not %q", s)
	}
	*b.p = v
	return nil
}
func (b *boolValue) String() string   { return strconv.FormatBool(b.p != nil && *b.p) }
func (b *boolValue) IsBoolFlag() bool { return true }

// namedValue keeps the first command-line error with the flag's name
// (the flag package would say "-name", and print every flag after it).
type namedValue struct {
	flag.Value
	c    *cmdFlags
	name string
}

func (v *namedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil && v.c.setErr == nil {
		v.c.setErr = fmt.Errorf("--%s: %v", v.name, err)
	}
	return err
}

func (v *namedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Parse parses the command line. -h and --help print the usage to out and
// return errHelp; a bad flag or value returns an error naming the flag.
func (c *cmdFlags) Parse(args []string, out io.Writer, synopsis string) error {
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.Usage(out, synopsis)
		return errHelp
	case c.setErr != nil:
		return fmt.Errorf("%w (see 'asyncgate %s -h')", c.setErr, c.cmd)
	case err != nil:
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
			return fmt.Errorf("unknown flag --%s for 'asyncgate %s' (see 'asyncgate %s -h')", name, c.cmd, c.cmd)
		}
		return fmt.Errorf("%s (see 'asyncgate %s -h')", strings.Replace(msg, " -", " --", 1), c.cmd)
	}
	if c.fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v (see 'asyncgate %s -h')", c.fs.Args(), c.cmd)
	}
	return nil
}

// Usage prints the command's help: the synopsis, then each group's flags.
func (c *cmdFlags) Usage(out io.Writer, synopsis string) {
	fmt.Fprintf(out, "usage: asyncgate %s [flags]\n\n%s\n", c.cmd, strings.TrimSpace(synopsis))
	for _, g := range c.groups {
		fmt.Fprintf(out, "\n%s:\n", g.title)
		for _, d := range g.docs {
			head := "  --" + d.name
			if d.arg != "" {
				head += " " + d.arg
			}
			fmt.Fprintln(out, head)
			fmt.Fprintf(out, "        %s\n", d.usage)
			meta := "env " + envName(d.name)
			if d.def != "" {
				meta = "default " + d.def + "; " + meta
			}
			fmt.Fprintf(out, "        (%s)\n", meta)
		}
	}
	fmt.Fprintln(out, "\nFlags may be written -name or --name, with the value after a space or '='.")
}
