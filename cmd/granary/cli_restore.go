package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

// dbRestoreCmd is `granary db restore INDEX (--export ID | --file PATH) [--wait]`.
func (c *cli) dbRestoreCmd() *cobra.Command {
	var export, file string
	var wait bool
	cmd := &cobra.Command{
		Use:   "restore INDEX (--export ID | --file PATH) [--wait]",
		Short: "replace a db's content with one of your exports or an RDB file (a job)",
		Long: `restore replaces everything in the db with db 0 of an RDB file: one of
your exports (--export ID) or a file you upload (--file PATH: a
redis-server dump.rdb, 'redis-cli --rdb' output, or a downloaded export).
The file is checked first: a corrupt file, or data bigger than the db's
size, is refused and the db is left as it was. Then the db refuses writes
while its content is replaced, and takes them again when the job is done.
Keys in the file's other dbs are left out (the job counts them).`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&export, "export", "", "the id of one of your finished exports")
	cmd.Flags().StringVar(&file, "file", "", "an RDB file to upload")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends")
	cmd.Flags().BoolVar(&wait, "watch", false, "the same as --wait, as other job commands spell it")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		path := "/v1/dbs/" + index + "/restore"
		switch {
		case (export == "") == (file == ""):
			return usagef("give exactly one of --export ID and --file PATH")
		case export != "":
			return c.startJob(ctx, false, http.MethodPost, path, map[string]string{"export": export}, wait)
		}
		f, err := os.Open(file)
		if err != nil {
			return usagef("%v", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		api, err := c.client(false)
		if err != nil {
			return err
		}
		api.HTTP = &http.Client{} // an upload takes as long as it takes; ctx stops it
		var raw json.RawMessage
		if err := api.Send(ctx, http.MethodPost, path, "application/octet-stream", f, st.Size(), &raw); err != nil {
			return err
		}
		var ref jobRefInfo
		if err := json.Unmarshal(raw, &ref); err != nil {
			return err
		}
		if wait {
			return c.watchAt(ctx, api, ref.Job, false)
		}
		return c.emit(raw, func(w io.Writer) error {
			fmt.Fprintf(w, "job %s started; follow it with 'granary job watch %s'\n", ref.Job, ref.Job)
			return nil
		})
	})
	return cmd
}
