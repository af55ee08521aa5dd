package main

import (
	"context"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

// dbImportCmd is `granary db import INDEX --source URL [--db N]` and its
// cutover and cancel subcommands.
func (c *cli) dbImportCmd() *cobra.Command {
	var source string
	var db int
	var watch bool
	cmd := &cobra.Command{
		Use:   "import INDEX --source redis://[user:password@]host:port [--db N] [--watch]",
		Short: "import a live outside Redis db into a db (a job); cut over with 'granary db import cutover'",
		Long: `import copies the source db into the db and keeps the copy in step while
your application still writes to the source; the db refuses writes
meanwhile. When 'granary job watch ID' shows it in step, stop writing to
the source and run 'granary db import cutover INDEX ID'. The source needs
keyspace notifications (CONFIG SET notify-keyspace-events KEA); it is only
read. Give the URL in GRANARY_IMPORT_SOURCE instead of --source to keep its
password out of the process list.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&source, "source", "", "redis://[user:password@]host:port (default $GRANARY_IMPORT_SOURCE)")
	cmd.Flags().IntVar(&db, "db", 0, "the source's db number")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job (until you cut over or cancel it from elsewhere)")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		if source == "" {
			source = os.Getenv("GRANARY_IMPORT_SOURCE")
		}
		if source == "" {
			return usagef("give the source with --source redis://host:port or GRANARY_IMPORT_SOURCE")
		}
		return c.startJob(ctx, false, http.MethodPost, "/v1/dbs/"+index+"/imports", map[string]any{"source": source, "db": db}, watch)
	})
	cmd.AddCommand(c.dbImportCallCmd("cutover", "cut an import over (stop writing to the source first)", http.MethodPost, "/cutover"),
		c.dbImportCallCmd("cancel", "cancel an import until it has cut over; the db keeps the keys copied so far", http.MethodDelete, ""))
	return cmd
}

func (c *cli) dbImportCallCmd(name, short, method, suffix string) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{Use: name + " INDEX ID [--watch]", Short: short, Args: cobra.ExactArgs(2)}
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job until it ends")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.startJob(ctx, false, method, "/v1/dbs/"+index+"/imports/"+args[1]+suffix, nil, watch)
	})
	return cmd
}
