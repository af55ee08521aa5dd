package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/granary-db/granary/metadb"
	"github.com/spf13/cobra"
)

// The tenant's commands: signup, login, db …, job watch, audit.

// dbInfo is a db as GET /v1/dbs/{index} shows it.
type dbInfo struct {
	Index      int    `json:"index"`
	Size       string `json:"size"`
	State      string `json:"state"`
	WriteMode  string `json:"write_mode"`
	UsedBytes  int64  `json:"used_bytes"`
	QuotaBytes int64  `json:"quota_bytes"`
	Banned     bool   `json:"banned"`
	Warning    string `json:"warning"`
	Endpoint   string `json:"endpoint"`
	URL        string `json:"url"`
	Slot       struct {
		Pair string `json:"pair"`
		DB   int    `json:"db"`
	} `json:"slot"`
	Job     string `json:"job"`
	Created string `json:"created"`
}

type jobRefInfo struct {
	Job string `json:"job"`
}

func (c *cli) signupCmd() *cobra.Command {
	var save bool
	cmd := &cobra.Command{
		Use:   "signup NAME",
		Short: "sign a new tenant up; shows its token and Redis password once",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&save, "save", false, "save the new token in the profile, for the next commands")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		api, err := c.client(false)
		if err != nil {
			return err
		}
		api.Token = "" // signup takes no token
		var raw json.RawMessage
		if err := api.Call(ctx, http.MethodPost, "/v1/tenants", map[string]string{"name": args[0]}, &raw); err != nil {
			return err
		}
		var out struct{ Tenant, Token, User, Password string }
		if err := json.Unmarshal(raw, &out); err != nil {
			return err
		}
		if save {
			prof, err := loadProfile()
			if err != nil {
				return err
			}
			if prof.API != api.Base {
				prof = profile{API: api.Base}
			}
			prof.Token = out.Token
			path, err := saveProfile(prof)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stderr, "token saved in %s\n", path)
		}
		return c.emit(raw, func(w io.Writer) error {
			fields(w, "tenant", out.Tenant, "user", out.User, "password", out.Password, "token", out.Token)
			fmt.Fprintln(w, "\nThe password and token are shown only now: keep them.")
			return nil
		})
	})
	return cmd
}

func (c *cli) loginCmd() *cobra.Command {
	var admin bool
	cmd := &cobra.Command{
		Use:   "login --api URL --token TOKEN [--admin]",
		Short: "save the API address and a token in the profile",
		Long: `login saves the API address and a token in the profile
($XDG_CONFIG_HOME/granary/profile.json or ~/.config/granary/profile.json,
readable by you only). With --admin the token is an admin token, used by the
admin commands. login checks nothing: the next command shows whether the
token works.`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&admin, "admin", false, "the token is an admin token")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		if c.api == "" || c.token == "" {
			return usagef("login needs --api and --token")
		}
		prof, err := loadProfile()
		if err != nil {
			return err
		}
		if api := normalAPI(c.api); prof.API != api {
			prof = profile{API: api}
		}
		if admin {
			prof.AdminToken = c.token
		} else {
			prof.Token = c.token
		}
		path, err := saveProfile(prof)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "saved %s\n", path)
		return nil
	})
	return cmd
}

func (c *cli) dbCmd() *cobra.Command {
	db := c.group(&cobra.Command{Use: "db", Short: "create, list, show, resize and drop your dbs"})
	db.AddCommand(c.dbCreateCmd(), c.dbListCmd(), c.dbShowCmd(), c.dbResizeCmd(), c.dbDropCmd(), c.dbSetModeCmd(),
		c.dbUsageCmd(), c.dbAlertsCmd(), c.dbSetAlertsCmd(), c.dbImportCmd(), c.dbKeysCmd(), c.dbExportCmd(), c.dbRestoreCmd())
	return db
}

func (c *cli) dbCreateCmd() *cobra.Command {
	var size, mode string
	cmd := &cobra.Command{
		Use:   "create --size SIZE [--write-mode confirmed|async]",
		Short: "create a db of a size: 32M 64M 128M 256M 512M 1G",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&size, "size", "", "size class: 32M 64M 128M 256M 512M 1G")
	cmd.Flags().StringVar(&mode, "write-mode", "", "confirmed (the default: a write is answered once the replica has it) or async")
	_ = cmd.MarkFlagRequired("size")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		body := map[string]string{"size": size}
		if mode != "" {
			body["write_mode"] = mode
		}
		return c.dbCall(ctx, http.MethodPost, "/v1/dbs", body)
	})
	return cmd
}

func (c *cli) dbListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "list your dbs", Args: cobra.NoArgs}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		var dbs []dbInfo
		raw, _, err := c.request(ctx, false, http.MethodGet, "/v1/dbs", nil, &dbs)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			if len(dbs) == 0 {
				fmt.Fprintln(w, "no dbs: create one with 'granary db create --size 64M'")
				return nil
			}
			rows(w, []string{"INDEX", "SIZE", "STATE", "WRITE MODE", "USED", "QUOTA", "URL"})
			for _, d := range dbs {
				rows(w, []string{strconv.Itoa(d.Index), d.Size, d.State, d.WriteMode, humanBytes(d.UsedBytes), humanBytes(d.QuotaBytes), d.URL})
			}
			return nil
		})
	})
	return cmd
}

func (c *cli) dbShowCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "show INDEX", Short: "show one db", Args: cobra.ExactArgs(1)}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.dbCall(ctx, http.MethodGet, "/v1/dbs/"+index, nil)
	})
	return cmd
}

func (c *cli) dbSetModeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set-mode INDEX confirmed|async",
		Short: "set a db's write mode",
		Args:  cobra.ExactArgs(2),
	}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.dbCall(ctx, http.MethodPatch, "/v1/dbs/"+index, map[string]string{"write_mode": args[1]})
	})
	return cmd
}

// request makes one call with the admin's token (admin) or the tenant's,
// and decodes the answer into v unless v is nil. It returns the answer as
// it came, for -o json, and the client, for a watch that follows the call.
func (c *cli) request(ctx context.Context, admin bool, method, path string, body, v any) (json.RawMessage, *apiclient.Client, error) {
	api, err := c.client(admin)
	if err != nil {
		return nil, nil, err
	}
	var raw json.RawMessage
	if err := api.Call(ctx, method, path, body, &raw); err != nil {
		return nil, nil, err
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, nil, err
		}
	}
	return raw, api, nil
}

// dbCall makes a call that answers one db and shows it.
func (c *cli) dbCall(ctx context.Context, method, path string, body any) error {
	var d dbInfo
	raw, _, err := c.request(ctx, false, method, path, body, &d)
	if err != nil {
		return err
	}
	slot := ""
	if d.Slot.Pair != "" {
		slot = fmt.Sprintf("%s db %d", d.Slot.Pair, d.Slot.DB)
	}
	return c.emit(raw, func(w io.Writer) error {
		fields(w, "index", strconv.Itoa(d.Index), "size", d.Size, "state", d.State, "write mode", d.WriteMode,
			"used", fmt.Sprintf("%s of %s", humanBytes(d.UsedBytes), humanBytes(d.QuotaBytes)),
			"warning", d.Warning, "endpoint", d.Endpoint, "url", d.URL,
			"slot", slot, "job", d.Job, "created", d.Created)
		return nil
	})
}

func (c *cli) dbResizeCmd() *cobra.Command {
	var size string
	var watch bool
	cmd := &cobra.Command{
		Use:   "resize INDEX --size SIZE [--watch]",
		Short: "resize a db live (a job); --watch follows it to the end",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&size, "size", "", "the new size class")
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job until it ends")
	_ = cmd.MarkFlagRequired("size")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.startJob(ctx, false, http.MethodPatch, "/v1/dbs/"+index, map[string]string{"size": size}, watch)
	})
	return cmd
}

func (c *cli) dbDropCmd() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "drop INDEX [--watch]",
		Short: "drop a db and its data (a job); --watch follows it to the end",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "follow the job until it ends")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.startJob(ctx, false, http.MethodDelete, "/v1/dbs/"+index, nil, watch)
	})
	return cmd
}

// startJob makes a call (as the admin, or the tenant) that answers
// {"job": id}, then either says how to follow the job or, with watch,
// follows it.
func (c *cli) startJob(ctx context.Context, admin bool, method, path string, body any, watch bool) error {
	var ref jobRefInfo
	raw, api, err := c.request(ctx, admin, method, path, body, &ref)
	if err != nil {
		return err
	}
	if watch {
		return c.watchAt(ctx, api, ref.Job, admin)
	}
	how := "granary job watch " + ref.Job
	if admin {
		how = "granary job watch --admin " + ref.Job
	}
	return c.emit(raw, func(w io.Writer) error {
		fmt.Fprintf(w, "job %s started; follow it with '%s'\n", ref.Job, how)
		return nil
	})
}

func (c *cli) jobCmd() *cobra.Command {
	job := c.group(&cobra.Command{Use: "job", Short: "follow your jobs"})
	watch := &cobra.Command{
		Use:   "watch ID",
		Short: "follow a job until it ends (Ctrl-C stops watching, not the job)",
		Long: `watch polls the job about every 200 ms. On a terminal it shows a progress
bar with the step and the bytes copied; otherwise it prints a line per step
("step copy 14% 3.2 MB/22.0 MB"; one more when the copy's size becomes
known) and "done" at the end. With -o json it
prints only the job as it ended. It exits 1 if the job failed, and 130 on
Ctrl-C, which stops the watching only: the job goes on.`,
		Args: cobra.ExactArgs(1),
	}
	var admin bool
	watch.Flags().BoolVar(&admin, "admin", false, "watch any job with the admin token (a failover's replica replacement, another tenant's job)")
	watch.RunE = c.action(func(ctx context.Context, args []string) error {
		api, err := c.client(admin)
		if err != nil {
			return err
		}
		return c.watchAt(ctx, api, args[0], admin)
	})
	job.AddCommand(watch)
	return job
}

type auditPage struct {
	Entries []metadb.AuditEntry `json:"entries"` // the API answers the records as metadb keeps them
	Next    string              `json:"next"`
}

func (c *cli) auditCmd() *cobra.Command {
	return c.auditCommand(false, "audit [--action A] [--limit N] [--cursor C]", "show your own audit log")
}

// auditCommand is `granary audit` (a tenant's own log) or, with admin,
// `granary admin audit` (everyone's, --tenant to narrow it).
func (c *cli) auditCommand(admin bool, use, short string) *cobra.Command {
	var tenant, action, cursor string
	var limit int
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	if admin {
		cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's entries")
	}
	cmd.Flags().StringVar(&action, "action", "", "only entries of this action")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many entries (the API's default when 0)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after the page that answered this cursor")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		if limit < 0 {
			return usagef("bad --limit %d: use a positive number", limit)
		}
		q := url.Values{}
		for k, v := range map[string]string{"tenant": tenant, "action": action, "cursor": cursor} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if limit > 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		path := "/v1/audit"
		if admin {
			path = "/v1/admin/audit"
		}
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var page auditPage
		raw, _, err := c.request(ctx, admin, http.MethodGet, path, nil, &page)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			rows(w, []string{"TIME", "ACTOR", "ACTION", "TARGET", "TENANT", "RESULT", "REQUEST"})
			for _, e := range page.Entries {
				rows(w, []string{e.Time, e.Actor, e.Action, e.Target, e.Tenant, e.Result, e.RequestID})
			}
			if page.Next != "" {
				fmt.Fprintf(c.stderr, "more: add --cursor %s\n", page.Next)
			}
			return nil
		})
	})
	return cmd
}

// dbIndexArg is a db index as the API takes it.
var dbIndexArg = regexp.MustCompile(`^[0-9]{1,9}$`)

func parseDBIndex(s string) (string, error) {
	if !dbIndexArg.MatchString(s) {
		return "", usagef("bad db index %q: use a non-negative integer (see 'granary db list')", s)
	}
	n, _ := strconv.Atoi(s)
	return strconv.Itoa(n), nil
}

// jobInfo is a job as GET /v1/jobs/{id} shows it.
type jobInfo struct {
	ID          string         `json:"id"`
	Kind        metadb.JobKind `json:"kind"`
	State       string         `json:"state"`
	Step        metadb.Step    `json:"step"`
	Progress    float64        `json:"progress"`
	Tenant      string         `json:"tenant"`
	Index       int            `json:"index"`
	Error       string         `json:"error"`
	Created     string         `json:"created"`
	Updated     string         `json:"updated"`
	BytesCopied int64          `json:"bytes_copied"`
	BytesTotal  int64          `json:"bytes_total"`
	// Export follows an export: keys written so far of those in the db.
	Export *struct {
		KeysCopied int64 `json:"keys_copied"`
		KeysTotal  int64 `json:"keys_total"`
	} `json:"export"`
}
