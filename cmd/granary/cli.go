package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// This file is the command tree of the granary binary. The server
// subcommands (master, proxy, keeper, api, dev) keep their own flag.FlagSet
// parsing: cobra hands them their arguments untouched. Every other
// subcommand is a client of the REST API and can do nothing the API
// refuses.
//
// Exit statuses of the client subcommands:
//
//	0    ok
//	1    failed: an API or network error, or a watched job that ended failed
//	     (one line on stderr: "granary: <text>")
//	2    usage: unknown command, bad flag, missing argument
//	130  interrupted (Ctrl-C); a job being watched goes on
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// failure is an error of a command that ran: exit 1.
type failure struct{ err error }

func (f failure) Error() string { return f.err.Error() }
func (f failure) Unwrap() error { return f.err }

// usageError is a command used wrongly: exit 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// exitStatus ends the process with a status whose message, if any, was
// printed already.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// cli is one run of the client: its global flags and output streams.
type cli struct {
	api, token, output string
	stdout, stderr     io.Writer
	// tty is whether stdout is a terminal: progress bars then, lines else.
	tty bool
	// poll is how often a watched job is fetched.
	poll time.Duration
}

// watchPoll is how often a watched job is fetched; tests shorten it.
var watchPoll = 200 * time.Millisecond

// runCLI runs the granary command line args and returns the exit status.
func runCLI(args []string) int {
	tty := term.IsTerminal(int(os.Stdout.Fd()))
	return execCLI(context.Background(), args, os.Stdout, os.Stderr, tty)
}

// execCLI is runCLI with the streams given, for tests.
func execCLI(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	c := &cli{stdout: stdout, stderr: stderr, tty: tty, poll: watchPoll}
	root := c.rootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	var (
		es exitStatus
		f  failure
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &es):
		return int(es)
	case errors.As(err, &f):
		fmt.Fprintf(stderr, "granary: %s\n", oneLine(failureText(f.err)))
		return exitFailed
	default:
		// cobra's own errors (unknown command or flag, wrong arguments)
		// and ours: usage.
		path := "granary"
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "granary: %s (see '%s --help')\n", oneLine(err.Error()), path)
		return exitUsage
	}
}

// failureText is what a failed call prints: the API's own error text when
// it answered one.
func failureText(err error) string {
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		if ae.Message == "" {
			return ae.StatusText
		}
		return ae.Message
	}
	return err.Error()
}

// oneLine keeps a message on one line: the first line of cobra's
// multi-line errors, newlines of others folded.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "\n\n"); i >= 0 {
		s = s[:i]
	}
	return strings.Join(strings.Fields(s), " ")
}

func (c *cli) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "granary",
		Short: "Granary: multi-tenant Redis. Servers, and a client of the REST API.",
		Long: `granary runs Granary's servers (master, proxy, keeper, api, dev) and is a
client of its REST API (signup, db, job, admin, login).

The client finds the API and token in this order: --api/--token, then
GRANARY_API/GRANARY_TOKEN, then the profile that 'granary login' writes, then
the cluster.json of 'granary dev' ($GRANARY_DEV_DIR/cluster.json or
./.dev/cluster.json: its admin token for admin commands, the demo tenant's
token for the others). A token from a file is only sent to that file's API.

Exit status: 0 ok, 1 failed (the API's error on stderr), 2 usage, 130
interrupted (a watched job goes on).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if c.output != "table" && c.output != "json" {
				return usagef("bad -o %q: use table or json", c.output)
			}
			return nil
		},
	}
	c.group(root)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&c.api, "api", "", "REST API URL (env GRANARY_API)")
	pf.StringVar(&c.token, "token", "", "API token (env GRANARY_TOKEN)")
	pf.StringVarP(&c.output, "output", "o", "table", "output: table or json")

	root.AddGroup(&cobra.Group{ID: "client", Title: "Client commands (REST API):"},
		&cobra.Group{ID: "server", Title: "Server commands (flags: granary <command> -h):"})
	for _, cmd := range []*cobra.Command{c.signupCmd(), c.loginCmd(), c.dbCmd(), c.jobCmd(), c.exportCmd(), c.auditCmd(), c.adminCmd()} {
		cmd.GroupID = "client"
		root.AddCommand(cmd)
	}
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		root.AddCommand(&cobra.Command{
			Use:                name + " [flags]",
			Short:              commands[name].usage,
			GroupID:            "server",
			DisableFlagParsing: true,
			RunE: func(_ *cobra.Command, args []string) error {
				if code := runServer(name, args); code != 0 {
					return exitStatus(code)
				}
				return nil
			},
		})
	}
	return root
}

// group makes cmd a command that only holds others: alone it prints its
// help on stderr and exits 2; with an argument, that is an unknown command.
func (c *cli) group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cmd.SetOut(c.stderr)
		_ = cmd.Help()
		return exitStatus(exitUsage)
	}
	return cmd
}

// action wraps a client command: it runs with a context that Ctrl-C or
// SIGTERM cancels, and its errors count as failures (exit 1) unless they
// are usage errors.
func (c *cli) action(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := fn(ctx, args)
		var u usageError
		var es exitStatus
		switch {
		case err == nil, errors.As(err, &u), errors.As(err, &es):
			return err
		case ctx.Err() != nil && cmd.Context().Err() == nil:
			fmt.Fprintln(c.stderr, "granary: interrupted")
			return exitStatus(exitInterrupted)
		}
		return failure{err}
	}
}

// client is the API client for a tenant command (admin false) or an admin
// command, from the flags, the environment and the files (cli_config.go).
func (c *cli) client(admin bool) (*apiclient.Client, error) {
	ep, err := findEndpoint(c.api, c.token, admin)
	if err != nil {
		return nil, err
	}
	return &apiclient.Client{Base: ep.API, Token: ep.Token, HTTP: &http.Client{Timeout: time.Minute}}, nil
}

// emit prints an answer: raw re-encoded (indented) for -o json, else the
// table that table writes.
func (c *cli) emit(raw json.RawMessage, table func(w io.Writer) error) error {
	if c.output == "json" {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return fmt.Errorf("bad answer: %w", err)
		}
		buf.WriteByte('\n')
		_, err := c.stdout.Write(buf.Bytes())
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	if err := table(tw); err != nil {
		return err
	}
	return tw.Flush()
}

// rows writes tab-separated rows, the first the header.
func rows(w io.Writer, rs ...[]string) {
	for _, r := range rs {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
}

// fields writes name: value lines, skipping empty values.
func fields(w io.Writer, kv ...string) {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", kv[i], kv[i+1])
		}
	}
}

// humanBytes writes n in units of 1024 named as Redis names them (64M is
// 64 × 1024 × 1024 bytes): 3.2 MB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "KMGTP"[exp])
}
