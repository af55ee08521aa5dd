package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// keysInfo is a db's key report as GET /v1/dbs/{index}/keys/report shows it.
type keysInfo struct {
	Index   int    `json:"index"`
	State   string `json:"state"`
	Scanned int64  `json:"scanned"`
	Error   string `json:"error"`
	Big     *struct {
		Finished   time.Time    `json:"finished"`
		ElapsedMS  int64        `json:"elapsed_ms"`
		Complete   bool         `json:"complete"`
		Partial    string       `json:"partial"`
		Keys       int64        `json:"keys"`
		Scanned    int64        `json:"scanned"`
		ByBytes    []bigKeyInfo `json:"by_bytes"`
		ByElements []bigKeyInfo `json:"by_elements"`
	} `json:"big_keys"`
	Hot struct {
		Time        *time.Time `json:"time"`
		Proxies     int        `json:"proxies"`
		SampleEvery int        `json:"sample_every"`
		Keys        []struct {
			Key       string  `json:"key"`
			OpsPerSec float64 `json:"ops_per_sec"`
			Error     float64 `json:"error"`
		} `json:"keys"`
	} `json:"hot_keys"`
}

type bigKeyInfo struct {
	Key      string `json:"key"`
	Type     string `json:"type"`
	Bytes    int64  `json:"bytes"`
	Elements int64  `json:"elements"`
}

// keysPoll is how often `db keys --scan` looks whether the scan finished.
const keysPoll = 500 * time.Millisecond

func (c *cli) dbKeysCmd() *cobra.Command {
	var scan bool
	cmd := &cobra.Command{
		Use:   "keys INDEX [--scan]",
		Short: "show a db's biggest keys (from the last scan) and hottest keys",
		Long: `keys shows a db's key report: the biggest keys by bytes and by element
count, from the last scan of the db on its replica, and the hottest keys, from
the proxies' sampling of the db's commands (estimated commands per second).
With --scan it first asks for a new scan and waits until it finishes (a db
is scanned at most once per 10 s; a request meanwhile shows the last one).`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&scan, "scan", false, "scan the db now and wait for the result")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		path := "/v1/dbs/" + index + "/keys/report"
		var k keysInfo
		method := http.MethodGet
		if scan {
			method = http.MethodPost
		}
		raw, _, err := c.request(ctx, false, method, path, nil, &k)
		if scan {
			t := time.NewTicker(keysPoll)
			defer t.Stop()
			for err == nil && (k.State == "pending" || k.State == "running") {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-t.C:
				}
				raw, _, err = c.request(ctx, false, http.MethodGet, path, nil, &k)
			}
		}
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error { return showKeys(w, &k) })
	})
	return cmd
}

func showKeys(w io.Writer, k *keysInfo) error {
	switch {
	case k.Big == nil && k.State == "none":
		fmt.Fprintln(w, "biggest keys: no scan yet; run 'granary db keys INDEX --scan'")
	case k.Big == nil:
		fmt.Fprintf(w, "biggest keys: first scan %s (%d keys scanned) %s\n", k.State, k.Scanned, k.Error)
	default:
		b := k.Big
		done := "complete"
		if !b.Complete {
			done = "partial: " + b.Partial
		}
		fmt.Fprintf(w, "biggest keys: scan of %s, %d of %d keys in %s, %s\n", b.Finished.Format(time.RFC3339),
			b.Scanned, b.Keys, (time.Duration(b.ElapsedMS) * time.Millisecond).String(), done)
		if k.State != "done" {
			fmt.Fprintf(w, "(a newer scan is %s, %d keys scanned) %s\n", k.State, k.Scanned, k.Error)
		}
		for _, l := range []struct {
			title string
			keys  []bigKeyInfo
		}{{"by bytes", b.ByBytes}, {"by elements", b.ByElements}} {
			fmt.Fprintf(w, "\n%s:\n", l.title)
			rows(w, []string{"KEY", "TYPE", "BYTES", "ELEMENTS"})
			for _, bk := range l.keys {
				rows(w, []string{strconv.Quote(bk.Key), bk.Type, humanBytes(bk.Bytes), strconv.FormatInt(bk.Elements, 10)})
			}
		}
	}
	h := k.Hot
	if len(h.Keys) == 0 {
		fmt.Fprintln(w, "\nhottest keys: none sampled lately")
		return nil
	}
	fmt.Fprintf(w, "\nhottest keys (%d proxies, sampled 1 in %d, as of %s):\n", h.Proxies, h.SampleEvery, h.Time.Format(time.RFC3339))
	rows(w, []string{"KEY", "OPS/S", "±"})
	for _, hk := range h.Keys {
		rows(w, []string{strconv.Quote(hk.Key), strconv.FormatFloat(hk.OpsPerSec, 'f', 1, 64), strconv.FormatFloat(hk.Error, 'f', 1, 64)})
	}
	return nil
}
