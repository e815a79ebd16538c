// Package config reads install-cni's settings from the environment (Calico's
// variable names) with documented defaults, and rejects bad values before
// anything is written. Pure: the environment comes in as a function.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kdd-cni/kdd-cni/install/internal/flannel"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// Config is everything install-cni needs.
type Config struct {
	HostRoot  string // CNI_HOST_ROOT: where the host's / is mounted (default /host)
	BinSrcDir string // CNI_BIN_SRC_DIR: the binaries to install (default /opt/cni/bin)
	NetDir    string // CNI_NET_DIR: the host's CNI config dir, as written into the conflist
	ConfName  string // CNI_CONF_NAME
	OldConf   string // CNI_OLD_CONF_NAME: removed when different from ConfName
	Template  string // CNI_NETWORK_CONFIG, or the contents of CNI_NETWORK_CONFIG_FILE
	// ConfVersion overrides the conflist's cniVersion (CNI_CONF_VERSION):
	// runtimes before containerd 2.0 reject 1.1.0 results.
	ConfVersion string
	SkipBins    map[string]bool
	UpdateBins  bool // UPDATE_CNI_BINARIES
	Sleep       bool // SLEEP: stay running and keep the token fresh

	// MTU is CNI_MTU; when that is unset or empty, MTUFromFlannel is set
	// and MTU is the fallback (1500) for a node without flannel.
	MTU            int
	MTUFromFlannel bool
	// FlannelSubnetFile is flanneld's subnet.env as mounted here
	// (FLANNEL_SUBNET_FILE, default /run/flannel/subnet.env): its
	// FLANNEL_MTU is the pods' MTU when CNI_MTU is not set.
	FlannelSubnetFile string
	NodeName          string // KUBERNETES_NODE_NAME
	DatastoreType     string // DATASTORE_TYPE
	LogLevel          string // LOG_LEVEL
	LogFilePath       string // LOG_FILE_PATH
	LogMaxSize        int    // LOG_FILE_MAX_SIZE (MB)
	LogMaxAge         int    // LOG_FILE_MAX_AGE (days)
	LogMaxCount       int    // LOG_FILE_MAX_COUNT

	// API server address written into the CNI kubeconfig; empty host means
	// the installer's own client's server.
	ServiceHost     string // KUBERNETES_SERVICE_HOST
	ServicePort     string // KUBERNETES_SERVICE_PORT
	ServiceProtocol string // KUBERNETES_SERVICE_PROTOCOL
	SkipTLSVerify   bool   // SKIP_TLS_VERIFY

	ServiceAccount string        // CALICO_CNI_SERVICE_ACCOUNT: the CNI identity
	Namespace      string        // POD_NAMESPACE, else the in-cluster namespace file
	PodName        string        // POD_NAME: install-cni's own pod (leak reclamation checks the runtime knows it)
	TokenTTL       time.Duration // CNI_TOKEN_TTL (default 24h)
	Kubeconfig     string        // KUBECONFIG: the installer's own client (else in-cluster)
	// StateDir is the plugin's state_dir as mounted here: the sidecar
	// replays the journal of annotation clears DEL could not send.
	StateDir string // KDD_CNI_STATE_DIR (default $CNI_HOST_ROOT/var/lib/kdd-cni)
	// OwnTokenFile is the installer's projected service-account token; a
	// change triggers an immediate refresh of the CNI token.
	OwnTokenFile string // SERVICEACCOUNT_TOKEN_FILE

	// MetricsBindAddress is host:port for the sidecar's Prometheus
	// endpoint (METRICS_BIND_ADDRESS, else METRICS_HOST and METRICS_PORT
	// joined); empty disables it.
	MetricsBindAddress string
	// RuntimeEndpoint is the container runtime's CRI socket
	// (CONTAINER_RUNTIME_ENDPOINT), asked for the live pod sandboxes.
	RuntimeEndpoint string
	// ReclaimInterval is how often leaked leases and host veths are
	// reclaimed (LEAK_RECLAIM_INTERVAL); 0 disables it.
	ReclaimInterval time.Duration
	// ReclaimGrace is how long a lease or host veth must be found stale
	// before it is reclaimed (LEAK_RECLAIM_GRACE): an ADD may be running.
	ReclaimGrace time.Duration
}

// Defaults.
const (
	DefaultServiceAccount = "kdd-cni-plugin"
	DefaultTemplateFile   = "/etc/kdd-cni/10-calico.conflist.template"
	saDir                 = "/var/run/secrets/kubernetes.io/serviceaccount"
	KubeconfigName        = "calico-kubeconfig"
)

// reader reads variables, collecting every bad value so they are reported
// together.
type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(format string, a ...any) { r.errs = append(r.errs, fmt.Errorf(format, a...)) }

func (r *reader) str(k, def string) string {
	if v := strings.TrimSpace(r.getenv(k)); v != "" {
		return v
	}
	return def
}

func (r *reader) boolean(k string, def bool) bool {
	v := r.getenv(k)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail("invalid %s=%q: want true or false", k, v)
	}
	return b
}

func (r *reader) integer(k string, def, lo, hi int) int {
	v := r.getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail("invalid %s=%q: want an integer from %d to %d", k, v, lo, hi)
	}
	return n
}

// duration reads a duration of at least lo ("0" is allowed when lo is 0).
func (r *reader) duration(k string, def, lo time.Duration) time.Duration {
	v := r.getenv(k)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo {
		r.fail("invalid %s=%q: want a duration of at least %s", k, v, lo)
	}
	return d
}

// Load reads the configuration: the variables, their checks, the node and
// namespace, the template. Every bad value is reported, together. getenv,
// readFile and hostname are os.Getenv, os.ReadFile and os.Hostname in
// production.
func Load(getenv func(string) string, readFile func(string) ([]byte, error), hostname func() (string, error)) (*Config, error) {
	r := &reader{getenv: getenv}
	c := read(r)
	c.check(r)
	c.identity(r, readFile, hostname)
	c.template(r, readFile)
	if err := errors.Join(r.errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// read takes the variables, with their defaults.
func read(r *reader) *Config {
	c := &Config{
		HostRoot:        r.str("CNI_HOST_ROOT", "/host"),
		BinSrcDir:       r.str("CNI_BIN_SRC_DIR", "/opt/cni/bin"),
		NetDir:          r.str("CNI_NET_DIR", "/etc/cni/net.d"),
		ConfName:        r.str("CNI_CONF_NAME", "10-calico.conflist"),
		OldConf:         r.str("CNI_OLD_CONF_NAME", "10-calico.conflist"),
		SkipBins:        map[string]bool{},
		UpdateBins:      r.boolean("UPDATE_CNI_BINARIES", true),
		Sleep:           r.boolean("SLEEP", true),
		MTU:             r.integer("CNI_MTU", 1500, 0, 65535), // 0 or at least netconf.MinMTU: below
		DatastoreType:   r.str("DATASTORE_TYPE", "kubernetes"),
		LogLevel:        r.str("LOG_LEVEL", "info"),
		LogFilePath:     r.str("LOG_FILE_PATH", "/var/log/calico/cni/cni.log"),
		LogMaxSize:      r.integer("LOG_FILE_MAX_SIZE", 100, 1, 1<<20),
		LogMaxAge:       r.integer("LOG_FILE_MAX_AGE", 30, 1, 1<<20),
		LogMaxCount:     r.integer("LOG_FILE_MAX_COUNT", 10, 1, 1<<20),
		ServiceHost:     r.str("KUBERNETES_SERVICE_HOST", ""),
		ServicePort:     r.str("KUBERNETES_SERVICE_PORT", "443"),
		ServiceProtocol: r.str("KUBERNETES_SERVICE_PROTOCOL", "https"),
		SkipTLSVerify:   r.boolean("SKIP_TLS_VERIFY", false),
		ServiceAccount:  r.str("CALICO_CNI_SERVICE_ACCOUNT", DefaultServiceAccount),
		Kubeconfig:      r.str("KUBECONFIG", ""),
		OwnTokenFile:    r.str("SERVICEACCOUNT_TOKEN_FILE", saDir+"/token"),
		ConfVersion:     r.str("CNI_CONF_VERSION", ""),
	}
	c.StateDir = r.str("KDD_CNI_STATE_DIR", filepath.Join(c.HostRoot, "var/lib/kdd-cni"))
	for _, b := range strings.Split(r.getenv("SKIP_CNI_BINARIES"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			c.SkipBins[b] = true
		}
	}
	c.MTUFromFlannel = strings.TrimSpace(r.getenv("CNI_MTU")) == ""
	c.FlannelSubnetFile = r.str("FLANNEL_SUBNET_FILE", flannel.DefaultSubnetFile)
	c.PodName = r.str("POD_NAME", "")
	c.MetricsBindAddress = r.str("METRICS_BIND_ADDRESS", "")
	if port := r.str("METRICS_PORT", ""); c.MetricsBindAddress == "" && port != "" {
		// Joined, so an IPv6 host (a node's status.hostIP) gets its brackets.
		c.MetricsBindAddress = net.JoinHostPort(r.str("METRICS_HOST", ""), port)
	}
	c.RuntimeEndpoint = r.str("CONTAINER_RUNTIME_ENDPOINT", "unix:///run/containerd/containerd.sock")
	c.ReclaimInterval = r.duration("LEAK_RECLAIM_INTERVAL", 5*time.Minute, 0)
	c.ReclaimGrace = r.duration("LEAK_RECLAIM_GRACE", 2*time.Minute, 30*time.Second)
	ttl := r.str("CNI_TOKEN_TTL", "24h")
	if d, err := time.ParseDuration(ttl); err != nil || d < 10*time.Minute {
		r.fail("invalid CNI_TOKEN_TTL=%q: want a duration of at least 10m (the API minimum)", ttl)
	} else {
		c.TokenTTL = d
	}
	return c
}

// check validates the values read.
func (c *Config) check(r *reader) {
	switch c.ConfVersion {
	case "", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0":
	default:
		r.fail("invalid CNI_CONF_VERSION=%q: want one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0", c.ConfVersion)
	}
	if c.DatastoreType != "kubernetes" {
		r.fail("invalid DATASTORE_TYPE=%q: only kubernetes is supported", c.DatastoreType)
	}
	if c.ServiceProtocol != "https" && c.ServiceProtocol != "http" {
		r.fail("invalid KUBERNETES_SERVICE_PROTOCOL=%q: want https or http", c.ServiceProtocol)
	}
	if p, err := strconv.Atoi(c.ServicePort); err != nil || p < 1 || p > 65535 {
		r.fail("invalid KUBERNETES_SERVICE_PORT=%q", c.ServicePort)
	}
	if c.ServiceHost != "" && strings.ContainsAny(c.ServiceHost, "/ ") {
		r.fail("invalid KUBERNETES_SERVICE_HOST=%q", c.ServiceHost)
	}
	for k, v := range map[string]string{"CNI_CONF_NAME": c.ConfName, "CNI_OLD_CONF_NAME": c.OldConf} {
		if strings.ContainsRune(v, '/') || v == "." || v == ".." {
			r.fail("invalid %s=%q: want a file name", k, v)
		}
	}
	if c.MTU != 0 && c.MTU < netconf.MinMTU {
		r.fail("invalid CNI_MTU=%d: want 0 (the host's) or from %d to 65535", c.MTU, netconf.MinMTU)
	}
	if a := c.MetricsBindAddress; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			hint := "want host:port (e.g. :9097)"
			if strings.Count(a, ":") > 1 && !strings.HasPrefix(a, "[") {
				hint = "an IPv6 host needs brackets ([fd00::10]:9097), or set METRICS_HOST and METRICS_PORT"
			}
			r.fail("invalid METRICS_BIND_ADDRESS=%q (or METRICS_HOST and METRICS_PORT): %s", a, hint)
		}
	}
	if e := c.RuntimeEndpoint; !strings.HasPrefix(e, "unix://") && !strings.HasPrefix(e, "/") {
		r.fail("invalid CONTAINER_RUNTIME_ENDPOINT=%q: want unix:///path/to.sock", e)
	}
	if !filepath.IsAbs(c.FlannelSubnetFile) {
		r.fail("invalid FLANNEL_SUBNET_FILE=%q: want an absolute path", c.FlannelSubnetFile)
	}
	if !filepath.IsAbs(c.NetDir) {
		r.fail("invalid CNI_NET_DIR=%q: want an absolute path", c.NetDir)
	}
}

// identity resolves the node name and the CNI service account's namespace.
func (c *Config) identity(r *reader, readFile func(string) ([]byte, error), hostname func() (string, error)) {
	if c.NodeName = r.str("KUBERNETES_NODE_NAME", ""); c.NodeName == "" {
		h, err := hostname()
		if err != nil {
			r.fail("failed to get hostname for KUBERNETES_NODE_NAME: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	if c.Namespace = r.str("POD_NAMESPACE", ""); c.Namespace == "" {
		b, err := readFile(saDir + "/namespace")
		if err != nil {
			r.errs = append(r.errs, errors.New("POD_NAMESPACE is unset and the in-cluster namespace file is missing: set POD_NAMESPACE"))
		}
		c.Namespace = strings.TrimSpace(string(b))
	}
}

// template loads the conflist template: the file, else the variable, else
// the image's default.
func (c *Config) template(r *reader, readFile func(string) ([]byte, error)) {
	switch f := r.getenv("CNI_NETWORK_CONFIG_FILE"); {
	case f != "":
		b, err := readFile(f)
		if err != nil {
			r.fail("failed to read CNI_NETWORK_CONFIG_FILE: %w", err)
		}
		c.Template = string(b)
	case r.getenv("CNI_NETWORK_CONFIG") != "":
		c.Template = r.getenv("CNI_NETWORK_CONFIG")
	default:
		b, err := readFile(DefaultTemplateFile)
		if err != nil {
			r.fail("no CNI_NETWORK_CONFIG or CNI_NETWORK_CONFIG_FILE and no default template: %w", err)
		}
		c.Template = string(b)
	}
}

// FromEnv loads from the process environment.
func FromEnv() (*Config, error) { return Load(os.Getenv, os.ReadFile, os.Hostname) }

// BinDirs are the host directories binaries go to.
func (c *Config) BinDirs() []string {
	return []string{filepath.Join(c.HostRoot, "opt/cni/bin"), filepath.Join(c.HostRoot, "secondary-bin-dir")}
}

// HostNetDir is where config files are written, seen from the installer.
func (c *Config) HostNetDir() string { return filepath.Join(c.HostRoot, "etc/cni/net.d") }

// KubeconfigHostPath is the kubeconfig's path on the host, for the conflist.
func (c *Config) KubeconfigHostPath() string { return filepath.Join(c.NetDir, KubeconfigName) }

// Server is the API server URL for the CNI kubeconfig ("" = use the client's).
func (c *Config) Server() string {
	if c.ServiceHost == "" {
		return ""
	}
	return c.ServiceProtocol + "://" + net.JoinHostPort(c.ServiceHost, c.ServicePort)
}
