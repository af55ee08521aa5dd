package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// The tenant's usage and alert commands: db usage, db alerts, db set-alerts.

type usageInfo struct {
	Points []struct {
		Time        time.Time `json:"time"`
		UsedBytes   int64     `json:"used_bytes"`
		QuotaBytes  int64     `json:"quota_bytes"`
		OpsPerSec   float64   `json:"ops_per_sec"`
		Connections int       `json:"connections"`
		ReplLag     int64     `json:"repl_lag_bytes"`
		Banned      bool      `json:"banned"`
	} `json:"points"`
}

type alertsInfo struct {
	Webhook   string  `json:"webhook"`
	SecretSet bool    `json:"secret_set"`
	UsedPct   float64 `json:"used_pct"`
	OpsPerSec float64 `json:"ops_per_sec"`
	ReplLag   float64 `json:"repl_lag_bytes"`
	Alerts    []struct {
		ID        string    `json:"id"`
		Metric    string    `json:"metric"`
		Value     float64   `json:"value"`
		Threshold float64   `json:"threshold"`
		Time      time.Time `json:"time"`
		State     string    `json:"state"`
		Attempts  int       `json:"attempts"`
		LastError string    `json:"last_error"`
	} `json:"alerts"`
}

func (c *cli) dbUsageCmd() *cobra.Command {
	var since time.Duration
	cmd := &cobra.Command{Use: "usage INDEX [--since 1h]", Short: "show a db's usage history", Args: cobra.ExactArgs(1)}
	cmd.Flags().DurationVar(&since, "since", time.Hour, "how far back")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		q := url.Values{"since": {time.Now().Add(-since).UTC().Format(time.RFC3339)}}
		var u usageInfo
		raw, _, err := c.request(ctx, false, http.MethodGet, "/v1/dbs/"+index+"/usage?"+q.Encode(), nil, &u)
		if err != nil {
			return err
		}
		return c.emit(raw, func(w io.Writer) error {
			rows(w, []string{"TIME", "USED", "QUOTA", "OPS/S", "CONNS", "REPL LAG", "BANNED"})
			for _, p := range u.Points {
				rows(w, []string{p.Time.Format(time.RFC3339), humanBytes(p.UsedBytes), humanBytes(p.QuotaBytes),
					strconv.FormatFloat(p.OpsPerSec, 'f', 1, 64), strconv.Itoa(p.Connections), strconv.FormatInt(p.ReplLag, 10),
					strconv.FormatBool(p.Banned)})
			}
			return nil
		})
	})
	return cmd
}

func (c *cli) dbAlertsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alerts INDEX", Short: "show a db's alert rule and alert history", Args: cobra.ExactArgs(1)}
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		return c.alertsCall(ctx, http.MethodGet, "/v1/dbs/"+index+"/alerts", nil)
	})
	return cmd
}

func (c *cli) dbSetAlertsCmd() *cobra.Command {
	var body struct {
		Webhook      string  `json:"webhook"`
		Secret       *string `json:"secret,omitempty"`
		UsedPct      float64 `json:"used_pct"`
		OpsPerSec    float64 `json:"ops_per_sec"`
		ReplLagBytes float64 `json:"repl_lag_bytes"`
	}
	var secretEnv string
	cmd := &cobra.Command{
		Use:   "set-alerts INDEX --webhook URL [--used-pct N] [--ops-per-sec N] [--repl-lag-bytes N] [--secret-env VAR]",
		Short: "set a db's alert thresholds and webhook (0 is off)",
		Args:  cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&body.Webhook, "webhook", "", "http:// or https:// URL the alerts are POSTed to")
	cmd.Flags().Float64Var(&body.UsedPct, "used-pct", 0, "alert when used bytes reach this percent of the quota")
	cmd.Flags().Float64Var(&body.OpsPerSec, "ops-per-sec", 0, "alert when commands per second reach this")
	cmd.Flags().Float64Var(&body.ReplLagBytes, "repl-lag-bytes", 0, "alert when the replication lag reaches this many bytes")
	cmd.Flags().StringVar(&secretEnv, "secret-env", "", "sign deliveries with the secret in this environment variable (kept when not given)")
	_ = cmd.MarkFlagRequired("webhook")
	cmd.RunE = c.action(func(ctx context.Context, args []string) error {
		index, err := parseDBIndex(args[0])
		if err != nil {
			return err
		}
		if secretEnv != "" {
			v, ok := os.LookupEnv(secretEnv)
			if !ok {
				return fmt.Errorf("--secret-env %s: the variable is not set", secretEnv)
			}
			body.Secret = &v
		}
		return c.alertsCall(ctx, http.MethodPut, "/v1/dbs/"+index+"/alerts", body)
	})
	return cmd
}

func (c *cli) alertsCall(ctx context.Context, method, path string, body any) error {
	var a alertsInfo
	raw, _, err := c.request(ctx, false, method, path, body, &a)
	if err != nil {
		return err
	}
	return c.emit(raw, func(w io.Writer) error {
		fields(w, "webhook", a.Webhook, "signed", strconv.FormatBool(a.SecretSet),
			"used pct", strconv.FormatFloat(a.UsedPct, 'f', -1, 64), "ops/s", strconv.FormatFloat(a.OpsPerSec, 'f', -1, 64),
			"repl lag bytes", strconv.FormatFloat(a.ReplLag, 'f', -1, 64))
		if len(a.Alerts) == 0 {
			return nil
		}
		fmt.Fprintln(w)
		rows(w, []string{"ID", "TIME", "METRIC", "VALUE", "THRESHOLD", "STATE", "ATTEMPTS", "LAST ERROR"})
		for _, x := range a.Alerts {
			rows(w, []string{x.ID, x.Time.Format(time.RFC3339), x.Metric, strconv.FormatFloat(x.Value, 'f', 1, 64),
				strconv.FormatFloat(x.Threshold, 'f', -1, 64), x.State, strconv.Itoa(x.Attempts), x.LastError})
		}
		return nil
	})
}
