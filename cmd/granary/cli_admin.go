package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/spf13/cobra"
)

// The operator's commands, under `granary admin`, with the admin token.

type pairInfo struct {
	ID      string `json:"id"`
	Size    string `json:"size"`
	Master  string `json:"master"`
	Replica string `json:"replica"`
	DBs     int    `json:"dbs"`
	Free    int    `json:"free"`
	Keeper  string `json:"keeper"`
	State   string `json:"state"`
	// Persistence is the pair's policy; "" for a pair added before
	// policies.
	Persistence string `json:"persistence,omitempty"`
}

type poolInfo struct {
	Size  string     `json:"size"`
	Pairs []pairInfo `json:"pairs"`
	Total int        `json:"total"`
	Free  int        `json:"free"`
}

func (c *cli) adminCmd() *cobra.Command {
	admin := c.group(&cobra.Command{Use: "admin", Short: "operators: pools, pairs, spares, proxies, keepers, jobs, audit"})
	admin.AddCommand(c.adminPoolsCmd(), c.adminPairsCmd(), c.adminSparesCmd(),
		c.adminMembersCmd("proxies", "list the proxies, live or lately lapsed"),
		c.adminMembersCmd("keepers", "list the keepers, live or lately lapsed"),
		c.adminJobsCmd(),
		c.auditCommand(true, "audit [--tenant T] [--action A] [--limit N] [--cursor C]", "show the audit log"))
	return admin
}

// adminGet calls GET path with the admin token and shows the answer with
// table, which decodes it.
func (c *cli) adminGet(ctx context.Context, path string, table func(raw json.RawMessage, w io.Writer) error) error {
	raw, _, err := c.request(ctx, true, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if c.output != "json" {
		// Decode before the table starts, so a bad answer prints nothing.
		if err := table(raw, io.Discard); err != nil {
			return fmt.Errorf("bad answer: %w", err)
		}
	}
	return c.emit(raw, func(w io.Writer) error { return table(raw, w) })
}

func (c *cli) adminPoolsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pools", Short: "list the pools and their pairs", Args: cobra.NoArgs}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.adminGet(ctx, "/v1/admin/pools", func(raw json.RawMessage, w io.Writer) error {
			var ps []poolInfo
			if err := json.Unmarshal(raw, &ps); err != nil {
				return err
			}
			rows(w, []string{"SIZE", "PAIR", "MASTER", "REPLICA", "DBS", "FREE", "STATE", "KEEPER"})
			for _, p := range ps {
				for _, pr := range p.Pairs {
					rows(w, []string{p.Size, pr.ID, pr.Master, pr.Replica, strconv.Itoa(pr.DBs), strconv.Itoa(pr.Free), pr.State, pr.Keeper})
				}
				rows(w, []string{p.Size, "(total)", "", "", strconv.Itoa(p.Total), strconv.Itoa(p.Free), "", ""})
			}
			return nil
		})
	})
	return cmd
}

func (c *cli) adminPairsCmd() *cobra.Command {
	pairs := c.group(&cobra.Command{Use: "pairs", Short: "add capacity: a Redis master and its replica"})
	var size, master, replica, dbs, persistence string
	add := &cobra.Command{
		Use:   "add --size SIZE --master HOST:PORT --replica HOST:PORT --dbs 0-15 [--persistence none|aof-everysec|aof-always]",
		Short: "add a pair to a pool; the API checks the servers first",
		Args:  cobra.NoArgs,
	}
	f := add.Flags()
	f.StringVar(&size, "size", "", "the pool's size class")
	f.StringVar(&master, "master", "", "the master's host:port")
	f.StringVar(&replica, "replica", "", "the replica's host:port (it must replicate the master)")
	f.StringVar(&dbs, "dbs", "", "the db numbers it offers, e.g. 0-15")
	f.StringVar(&persistence, "persistence", "", "the policy both servers run under: none (the default), aof-everysec or aof-always (checked against their CONFIG)")
	for _, n := range []string{"size", "master", "replica", "dbs"} {
		_ = add.MarkFlagRequired(n)
	}
	add.RunE = c.action(func(ctx context.Context, args []string) error {
		var p pairInfo
		path := "/v1/admin/pools/" + url.PathEscape(size) + "/pairs"
		body := map[string]string{"master": master, "replica": replica, "dbs": dbs}
		if persistence != "" {
			body["persistence"] = persistence
		}
		raw, _, err := c.request(ctx, true, http.MethodPost, path, body, &p)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			fields(w, "pair", p.ID, "size", p.Size, "master", p.Master, "replica", p.Replica,
				"dbs", strconv.Itoa(p.DBs), "free", strconv.Itoa(p.Free), "state", p.State, "persistence", p.Persistence)
			return nil
		})
	})
	drain := &cobra.Command{
		Use:   "drain ID",
		Short: "move every db off a pair (same-size resizes, one at a time), then mark it drained",
		Args:  cobra.ExactArgs(1),
	}
	drain.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.startJob(ctx, true, http.MethodPost, "/v1/admin/pairs/"+url.PathEscape(args[0])+"/drain", nil, false)
	})
	rebalance := &cobra.Command{
		Use:   "rebalance SIZE",
		Short: "even the used bytes of a pool's pairs, moving the fewest dbs",
		Args:  cobra.ExactArgs(1),
	}
	rebalance.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.startJob(ctx, true, http.MethodPost, "/v1/admin/pools/"+url.PathEscape(args[0])+"/rebalance", nil, false)
	})
	pairs.AddCommand(add, drain, rebalance)
	return pairs
}

func (c *cli) adminSparesCmd() *cobra.Command {
	spares := &cobra.Command{Use: "spares", Short: "list the spare servers (future replicas)", Args: cobra.NoArgs}
	spares.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.adminGet(ctx, "/v1/admin/spares", func(raw json.RawMessage, w io.Writer) error {
			var ss []struct {
				Addr string `json:"addr"`
			}
			if err := json.Unmarshal(raw, &ss); err != nil {
				return err
			}
			rows(w, []string{"ADDR"})
			for _, s := range ss {
				rows(w, []string{s.Addr})
			}
			return nil
		})
	})
	add := &cobra.Command{Use: "add ADDR", Short: "add an empty Redis master to the spare pool", Args: cobra.ExactArgs(1)}
	add.RunE = c.action(func(ctx context.Context, args []string) error {
		var s struct {
			Addr string `json:"addr"`
		}
		raw, _, err := c.request(ctx, true, http.MethodPost, "/v1/admin/spares", map[string]string{"addr": args[0]}, &s)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			fmt.Fprintf(w, "spare %s added\n", s.Addr)
			return nil
		})
	})
	spares.AddCommand(add)
	return spares
}

func (c *cli) adminMembersCmd(kind, short string) *cobra.Command {
	cmd := &cobra.Command{Use: kind, Short: short, Args: cobra.NoArgs}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.adminGet(ctx, "/v1/admin/"+kind, func(raw json.RawMessage, w io.Writer) error {
			var ms []metadb.Member // the API answers the records as metadb keeps them
			if err := json.Unmarshal(raw, &ms); err != nil {
				return err
			}
			rows(w, []string{"ID", "ADDR", "LIVE", "VERSION", "CONNS", "DBS", "STARTED", "LEASE EXPIRES"})
			for _, m := range ms {
				rows(w, []string{m.ID, m.Addr, strconv.FormatBool(m.Live), strconv.FormatUint(m.AppliedVersion, 10),
					strconv.Itoa(m.Conns), strconv.Itoa(m.DBs), m.Started.Format(time.DateTime), m.LeaseExpires.Format(time.TimeOnly)})
			}
			return nil
		})
	})
	return cmd
}

func (c *cli) adminJobsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "jobs", Short: "list the newest jobs of every tenant", Args: cobra.NoArgs}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		return c.adminGet(ctx, "/v1/admin/jobs", func(raw json.RawMessage, w io.Writer) error {
			var js []jobInfo
			if err := json.Unmarshal(raw, &js); err != nil {
				return err
			}
			rows(w, []string{"ID", "KIND", "STATE", "STEP", "PROGRESS", "TENANT", "INDEX", "UPDATED", "ERROR"})
			for _, j := range js {
				rows(w, []string{j.ID, string(j.Kind), j.State, string(j.Step), fmt.Sprintf("%d%%", int(j.Progress*100)),
					j.Tenant, strconv.Itoa(j.Index), j.Updated, j.Error})
			}
			return nil
		})
	})
	return cmd
}
