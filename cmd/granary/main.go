// Command granary is Granary's one binary. The server subcommands, granary
// master | proxy | keeper | api | dev, fill their component's Config from
// flags, then from GRANARY_* environment variables (the flag name
// upper-cased, dashes as underscores: --metadb-url -> GRANARY_METADB_URL),
// then run it until SIGINT or SIGTERM. The other subcommands (signup, db,
// job, admin, login; cli.go) are a client of the REST API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
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
	os.Exit(runCLI(os.Args[1:]))
}

// runServer runs the server subcommand name with args, as granary always
// has: flags through its flag.FlagSet, until SIGINT or SIGTERM. It returns
// the exit status: 0, 1 after an error (logged), 0 for -h.
func runServer(name string, args []string) int {
	cmd := commands[name]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).
		With().Timestamp().Str("cmd", name).Logger()
	if lv, err := zerolog.ParseLevel(os.Getenv("GRANARY_LOG_LEVEL")); err == nil && lv != zerolog.NoLevel {
		log = log.Level(lv)
	}
	// go-redis logs every failed dial on its own; the components report
	// backend errors themselves, once, with context.
	redis.SetLogger(quietRedisLogger{})
	if err := cmd.run(ctx, log, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		log.Error().Err(err).Msg("exit")
		return 1
	}
	return 0
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
