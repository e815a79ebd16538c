// Package metrics is install-cni's Prometheus endpoint. The plugins cannot
// serve metrics (each invocation lives for milliseconds), so they append a
// record per invocation to the node-local store (nodestate.Records); the
// sidecar drains it every second into counters and histograms here, and
// reads the node's state (journal, leases, token) when scraped.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// Usage is one address family's use of the IP pool.
type Usage struct {
	Family          string // IPv4 or IPv6
	InUse, Capacity float64
}

// Sources are what the gauges read when scraped.
type Sources struct {
	// State holds the plugins' records and the journal's pending
	// annotation clears.
	State nodestate.Dir
	// IPAM is the pool's use by family (nil: not reported).
	IPAM func() []Usage
	// TokenExpiry is the CNI kubeconfig's token's expiry (zero: unknown).
	TokenExpiry func() time.Time
}

// Metrics holds the registry.
type Metrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.HistogramVec
	steps   *prometheus.HistogramVec
	api     *prometheus.CounterVec
	skipped prometheus.Counter
	src     Sources
}

var (
	journalDesc  = prometheus.NewDesc("kdd_cni_journal_pending", "Annotation clears DEL could not send, waiting for the datastore.", nil, nil)
	inUseDesc    = prometheus.NewDesc("kdd_cni_ipam_addresses_in_use", "Addresses leased by host-local on this node.", []string{"family"}, nil)
	capacityDesc = prometheus.NewDesc("kdd_cni_ipam_addresses_capacity", "Addresses host-local can lease from the node's podCIDR.", []string{"family"}, nil)
	tokenDesc    = prometheus.NewDesc("kdd_cni_token_expiry_timestamp_seconds", "When the CNI kubeconfig's token expires (Unix time).", nil, nil)
)

// New builds the registry: the plugins' operations, the node gauges, and
// the sidecar's own Go and process metrics.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kdd_cni_operation_duration_seconds",
			Help:    "CNI commands run by the plugins on this node, by plugin, command and result (success or the CNI error code).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 13), // 5ms .. 20s
		}, []string{"plugin", "command", "result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kdd_cni_step_duration_seconds",
			Help:    "Time spent in the named steps of the plugins' commands.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1ms .. 16s
		}, []string{"plugin", "command", "step"}),
		api: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kdd_cni_api_requests_total",
			Help: "Requests the plugins sent to the API server, by verb and the command that sent them.",
		}, []string{"verb", "command"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kdd_cni_metrics_records_skipped_total",
			Help: "Invocation records that could not be decoded and were skipped.",
		}),
		src: src,
	}
	m.reg.MustRegister(m.ops, m.steps, m.api, m.skipped, nodeCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Drain turns the records the plugins appended into observations.
func (m *Metrics) Drain() error {
	recs, skipped, err := m.src.State.Records().Drain()
	m.skipped.Add(float64(skipped))
	for _, r := range recs {
		m.ops.WithLabelValues(r.Plugin, r.Command, r.Result).Observe(r.Seconds)
		for step, s := range r.Steps {
			m.steps.WithLabelValues(r.Plugin, r.Command, step).Observe(s)
		}
		for verb, n := range r.API {
			m.api.WithLabelValues(verb, r.Command).Add(float64(n))
		}
	}
	return err
}

// Bounds of the endpoint, which every pod can reach (host network): its
// memory must not grow with what clients open or send.
const (
	maxConns         = 64 // more wait in the kernel's accept queue
	maxInFlight      = 2  // scrapes gathered at once; more get 503
	scrapeTimeout    = 10 * time.Second
	readHeaderTimout = 3 * time.Second
	readTimeout      = 5 * time.Second
	writeTimeout     = 15 * time.Second
	idleTimeout      = 30 * time.Second
)

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg,
		MaxRequestsInFlight: maxInFlight, Timeout: scrapeTimeout})
}

// Serve serves /metrics on addr until ctx is done. The listener is opened
// before Serve returns to its caller's goroutine, so a bad address is an
// error at start.
func (m *Metrics) Serve(ctx context.Context, addr string) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln = netutil.LimitListener(ln, maxConns)
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: 8 << 10}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

// nodeCollector reads the node's state at scrape time.
type nodeCollector struct{ m *Metrics }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- journalDesc
	ch <- inUseDesc
	ch <- capacityDesc
	ch <- tokenDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.src
	if pending, err := src.State.Journal().Pending(); err == nil {
		ch <- prometheus.MustNewConstMetric(journalDesc, prometheus.GaugeValue, float64(len(pending)))
	}
	if src.IPAM != nil {
		for _, u := range src.IPAM() {
			ch <- prometheus.MustNewConstMetric(inUseDesc, prometheus.GaugeValue, u.InUse, u.Family)
			ch <- prometheus.MustNewConstMetric(capacityDesc, prometheus.GaugeValue, u.Capacity, u.Family)
		}
	}
	if src.TokenExpiry != nil {
		if exp := src.TokenExpiry(); !exp.IsZero() {
			ch <- prometheus.MustNewConstMetric(tokenDesc, prometheus.GaugeValue, float64(exp.Unix()))
		}
	}
}
