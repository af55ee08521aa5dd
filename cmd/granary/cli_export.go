package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/spf13/cobra"
)

// exportInfo is an export as GET /v1/exports lists it.
type exportInfo struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	State   string `json:"state"`
	Created string `json:"created"`
	Bytes   int64  `json:"bytes"`
	Keys    int64  `json:"keys"`
	SHA256  string `json:"sha256"`
	Error   string `json:"error"`
}

// dbExportCmd is `granary db export INDEX [--wait] [--out FILE]`.
func (c *cli) dbExportCmd() *cobra.Command {
	var wait bool
	var out string
	cmd := &cobra.Command{
		Use:   "export INDEX [--wait] [--out FILE]",
		Short: "export a db as an RDB file a plain redis-server loads (a job)",
		Long: `export writes the db's keys, read from its replica, as an RDB file kept by
Granary (at most 16 per tenant: 'granary export delete ID' makes room). With
--wait it follows the job to its end; with --out it also downloads the file
to FILE and checks its SHA-256. Load the file in a plain redis-server by
putting it in the server's dir as dump.rdb (or its dbfilename) and starting
the server; the keys are in db 0.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends")
	cmd.Flags().StringVar(&out, "out", "", "download the file to this path once done (implies --wait)")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		if out == "" {
			return c.startJob(ctx, false, http.MethodPost, "/v1/dbs/"+index+"/exports", nil, wait)
		}
		var ref jobRefInfo
		_, api, err := c.request(ctx, false, http.MethodPost, "/v1/dbs/"+index+"/exports", nil, &ref)
		if err != nil {
			return err
		}
		if err := c.watchAt(ctx, api, ref.Job, false); err != nil {
			return err
		}
		return c.download(ctx, api, ref.Job, out)
	})
	return cmd
}

// exportCmd is `granary export list|download|delete`.
func (c *cli) exportCmd() *cobra.Command {
	cmd := c.group(&cobra.Command{Use: "export", Short: "list, download and delete your db exports"})
	list := &cobra.Command{Use: "list", Short: "list your exports", Args: cobra.NoArgs}
	list.RunE = c.action(func(ctx context.Context, args []string) error {
		var exports []exportInfo
		raw, _, err := c.request(ctx, false, http.MethodGet, "/v1/exports", nil, &exports)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			if len(exports) == 0 {
				fmt.Fprintln(w, "no exports: make one with 'granary db export INDEX'")
				return nil
			}
			rows(w, []string{"ID", "DB", "STATE", "CREATED", "SIZE", "KEYS", "SHA256"})
			for _, e := range exports {
				rows(w, []string{e.ID, strconv.Itoa(e.Index), e.State, e.Created, humanBytes(e.Bytes), strconv.FormatInt(e.Keys, 10), e.SHA256})
			}
			return nil
		})
	})
	var out string
	download := &cobra.Command{Use: "download ID --out FILE", Short: "download an export's RDB file, checking its SHA-256", Args: cobra.ExactArgs(1)}
	download.Flags().StringVar(&out, "out", "", "the file to write (required)")
	download.RunE = c.action(func(ctx context.Context, args []string) error {
		if out == "" {
			return usagef("give the file to write with --out FILE")
		}
		api, err := c.client(false)
		if err != nil {
			return err
		}
		return c.download(ctx, api, args[0], out)
	})
	del := &cobra.Command{Use: "delete ID", Short: "delete an export and its file (a running one is stopped)", Args: cobra.ExactArgs(1)}
	del.RunE = c.action(func(ctx context.Context, args []string) error {
		var e exportInfo
		raw, _, err := c.request(ctx, false, http.MethodDelete, "/v1/exports/"+url.PathEscape(args[0]), nil, &e)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			fmt.Fprintf(w, "export %s deleted\n", e.ID)
			return nil
		})
	})
	cmd.AddCommand(list, download, del)
	return cmd
}

// errChecksum: a downloaded file's SHA-256 is not the one the API sent.
var errChecksum = errors.New("checksum mismatch")

// download writes export id's file to path: into a temporary file beside
// it, checked against the X-Checksum-SHA256 header, then renamed into
// place, so path never holds a partial or corrupt file.
func (c *cli) download(ctx context.Context, api *apiclient.Client, id, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	dl := *api
	dl.HTTP = &http.Client{} // no overall timeout: ctx bounds a big file
	header, err := dl.Download(ctx, "/v1/exports/"+url.PathEscape(id), io.MultiWriter(tmp, h))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	got, want := hex.EncodeToString(h.Sum(nil)), strings.ToLower(header.Get("X-Checksum-SHA256"))
	if want == "" || got != want {
		return fmt.Errorf("export %s: %w: the file's SHA-256 is %s, the API sent %q; nothing written", id, errChecksum, got, want)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("wrote %s (%s, sha256 %s)\n", path, humanBytes(st.Size()), got)
	if c.output == "json" { // stdout holds JSON only
		_, err = io.WriteString(c.stderr, msg)
		return err
	}
	_, err = io.WriteString(c.stdout, msg)
	return err
}
