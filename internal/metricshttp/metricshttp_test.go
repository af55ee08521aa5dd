package metricshttp

import (
	"context"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNames(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "b_total", Help: "h"}, []string{"l"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "x", Subsystem: "y", Name: "a", Help: "h"})
	desc := prometheus.NewDesc("c_seconds", "h", nil, nil)
	got := Names(vec, g, g, &constCollector{desc})
	want := []string{"b_total", "c_seconds", "x_y_a"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

type constCollector struct{ d *prometheus.Desc }

func (c *constCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.d }
func (c *constCollector) Collect(chan<- prometheus.Metric)    {}

// TestServe: /metrics answers from the registry until ctx ends; then Serve
// returns nil and nothing listens.
func TestServe(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "served_total", Help: "h"})
	reg.MustRegister(c)
	c.Inc()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/metrics"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, reg) }()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "served_total 1") {
		t.Fatalf("got %d %s, want 200 with served_total 1", resp.StatusCode, b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("/metrics still answers after Serve returned")
	}
	if _, err := Listen("256.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("Listen on a bad address: %v, want an error naming it", err)
	}
}
