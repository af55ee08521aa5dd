package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/granary-db/granary/metadb"
	"github.com/schollz/progressbar/v3"
)

// watch follows job id until it ends: a live bar when stdout is a terminal,
// a line per step change otherwise, nothing but the last view with -o json.
// It returns a failure when the job ended failed. Ctrl-C (ctx ending) stops
// the watching only: it says how to watch again and exits 130.
func (c *cli) watch(ctx context.Context, api *apiclient.Client, id string) error {
	return c.watchAt(ctx, api, id, false)
}

// watchAt is watch through the tenant's route (GET /v1/jobs/{id}) or, with
// admin, the admin's (GET /v1/admin/jobs/{id}), which shows any job: a
// failover's replica replacement has no tenant.
func (c *cli) watchAt(ctx context.Context, api *apiclient.Client, id string, admin bool) error {
	var show jobDisplay = lineDisplay{w: c.stdout}
	switch {
	case c.output == "json":
		show = nil
	case c.tty:
		show = newBarDisplay(c.stdout)
	}
	path, again := "/v1/jobs/"+url.PathEscape(id), "granary job watch "+id
	if admin {
		path, again = "/v1/admin/jobs/"+url.PathEscape(id), "granary job watch --admin "+id
	}
	t := time.NewTicker(c.poll)
	defer t.Stop()
	var (
		last    jobInfo
		lastErr string
	)
	for first := true; ; first = false {
		var raw json.RawMessage
		err := api.Call(ctx, http.MethodGet, path, nil, &raw)
		if ctx.Err() != nil {
			return c.stopWatching(show, id, again)
		}
		var j jobInfo
		if err == nil {
			err = json.Unmarshal(raw, &j)
		}
		if err != nil {
			var ae *apiclient.Error
			if first || (errors.As(err, &ae) && ae.Status < 500) {
				// The API refused (no such job, bad token) or never answered.
				return err
			}
			// A passing network or server error while watching: try again,
			// saying so once per outage.
			if msg := oneLine(failureText(err)); msg != lastErr {
				lastErr = msg
				fmt.Fprintf(c.stderr, "granary: %s (retrying)\n", msg)
			}
		} else {
			lastErr = ""
			if show != nil {
				show.update(last, j, first)
			}
			last = j
			if j.State != metadb.JobRunning {
				if show != nil {
					show.end(j)
				}
				if c.output == "json" {
					if err := c.emit(raw, nil); err != nil {
						return err
					}
				}
				if j.State == metadb.JobFailed {
					return fmt.Errorf("job %s failed: %s", j.ID, j.Error)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return c.stopWatching(show, id, again)
		case <-t.C:
		}
	}
}

func (c *cli) stopWatching(show jobDisplay, id, again string) error {
	if show != nil {
		show.stop()
	}
	fmt.Fprintf(c.stderr, "granary: stopped watching; job %s goes on: '%s' watches it again\n", id, again)
	return exitStatus(exitInterrupted)
}

// jobDisplay shows a watched job.
type jobDisplay interface {
	// update shows j; prev is the view before (zero at the first).
	update(prev, j jobInfo, first bool)
	// end shows a job that ended.
	end(j jobInfo)
	// stop leaves the display when the watching stops before the end.
	stop()
}

// stepText is "copy 14% 3.2 MB/22.0 MB": the step, the job's progress and,
// when the job counts them, the bytes copied.
func stepText(j jobInfo) string {
	s := fmt.Sprintf("%s %d%%", j.Step, int(j.Progress*100))
	if j.BytesTotal > 0 {
		s += fmt.Sprintf(" %s/%s", humanBytes(j.BytesCopied), humanBytes(j.BytesTotal))
	}
	return s + exportText(j)
}

// exportText is an export's " 5000/100000 keys 1.2 MB": the keys written
// of those in the db, and the file's bytes so far; "" for other jobs.
func exportText(j jobInfo) string {
	if j.Export == nil || j.Export.KeysTotal == 0 {
		return ""
	}
	return fmt.Sprintf(" %d/%d keys %s", j.Export.KeysCopied, j.Export.KeysTotal, humanBytes(j.BytesCopied))
}

// lineDisplay prints a line per step change, for logs and scripts.
type lineDisplay struct{ w io.Writer }

func (d lineDisplay) update(prev, j jobInfo, first bool) {
	// A line per step, and one more when the copy's size becomes known
	// (the keeper counts it only once the copy has begun).
	if j.State == metadb.JobRunning && (first || j.Step != prev.Step || (j.BytesTotal > 0 && prev.BytesTotal == 0)) {
		fmt.Fprintf(d.w, "step %s\n", stepText(j))
	}
}

func (d lineDisplay) end(j jobInfo) {
	if j.State == metadb.JobFailed {
		fmt.Fprintf(d.w, "failed at %s: %s\n", j.Step, j.Error)
		return
	}
	fmt.Fprintln(d.w, j.State)
}

func (d lineDisplay) stop() {}

// barDisplay is a live progress bar on a terminal.
type barDisplay struct {
	w    io.Writer
	bar  *progressbar.ProgressBar
	desc string
}

// barMax is the bar's resolution: progress in tenths of a percent.
const barMax = 1000

func newBarDisplay(w io.Writer) *barDisplay {
	return &barDisplay{w: w, bar: progressbar.NewOptions64(barMax,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetWidth(30),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetRenderBlankState(true),
	)}
}

func (d *barDisplay) describe(j jobInfo) string {
	s := fmt.Sprintf("%-9s", j.Step)
	if j.BytesTotal > 0 {
		s += fmt.Sprintf(" %s/%s", humanBytes(j.BytesCopied), humanBytes(j.BytesTotal))
	}
	return s + exportText(j)
}

func (d *barDisplay) update(_, j jobInfo, _ bool) {
	_ = d.bar.Set64(int64(j.Progress * barMax))
	if desc := d.describe(j); desc != d.desc {
		d.desc = desc
		d.bar.Describe(desc) // renders again
	}
}

func (d *barDisplay) end(j jobInfo) {
	if j.State == metadb.JobDone {
		_ = d.bar.Finish()
		fmt.Fprintln(d.w)
		fmt.Fprintln(d.w, j.State)
		return
	}
	_ = d.bar.Exit()
	fmt.Fprintln(d.w)
	fmt.Fprintf(d.w, "failed at %s: %s\n", j.Step, j.Error)
}

func (d *barDisplay) stop() {
	_ = d.bar.Exit()
	fmt.Fprintln(d.w)
}
