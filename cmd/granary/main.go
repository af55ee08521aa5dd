// Command granary is Granary's one binary: granary master | proxy | keeper |
// api | dev. Each subcommand fills its component's Config from flags, then
// from GRANARY_* environment variables (the flag name upper-cased, dashes
// as underscores: --metadb-url -> GRANARY_METADB_URL), then runs it until
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

type command struct {
	run   func(ctx context.Context, log zerolog.Logger, args []string) error
	usage string
}

var commands = map[string]command{}

func register(name, usage string, run func(ctx context.Context, log zerolog.Logger, args []string) error) {
	commands[name] = command{run: run, usage: usage}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "granary: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).
		With().Timestamp().Str("cmd", os.Args[1]).Logger()
	if lv, err := zerolog.ParseLevel(os.Getenv("GRANARY_LOG_LEVEL")); err == nil && lv != zerolog.NoLevel {
		log = log.Level(lv)
	}
	// go-redis logs every failed dial on its own; the components report
	// backend errors themselves, once, with context.
	redis.SetLogger(quietRedisLogger{})
	if err := cmd.run(ctx, log, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		log.Error().Err(err).Msg("exit")
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: granary <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", n, commands[n].usage)
	}
	fmt.Fprintln(os.Stderr, "\nrun 'granary <command> -h' for its flags")
}

// parseFlags parses args, then sets every flag that was not given from its
// GRANARY_* environment variable, if that is set.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := "GRANARY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// quietRedisLogger drops go-redis's internal log lines.
type quietRedisLogger struct{}

func (quietRedisLogger) Printf(context.Context, string, ...interface{}) {}
