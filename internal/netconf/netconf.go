// Package netconf parses the plugin's network configuration: Calico's netconf
// keys (tolerating unknown ones), the environment "seeds" Calico honours, and
// the pod identity from CNI_ARGS. It is pure: files and the environment are
// reached only through the Env passed in.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/internal/logging"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// Defaults that Calico's manifests and binary use.
const (
	DefaultNodenameFile = "/var/lib/calico/nodename"
	DefaultMTUFile      = "/var/lib/calico/mtu"
	DefaultStateDir     = "/var/lib/kdd-cni"
	DatastoreKubernetes = "kubernetes"
)

// NetConf is the `calico` plugin's configuration.
type NetConf struct {
	types.NetConf

	Nodename             string `json:"nodename"`
	NodenameFile         string `json:"nodename_file"`
	NodenameFileOptional bool   `json:"nodename_file_optional"`
	Hostname             string `json:"hostname"` // deprecated alias of nodename

	DatastoreType string     `json:"datastore_type"`
	EtcdEndpoints string     `json:"etcd_endpoints"` // only to detect an etcd datastore, which is refused
	Kubernetes    Kubernetes `json:"kubernetes"`
	Policy        Policy     `json:"policy"`

	MTU            int    `json:"mtu"`
	MTUFile        string `json:"mtu_file"` // kdd-cni: where calico-node writes the detected MTU
	RequireMTUFile bool   `json:"require_mtu_file"`
	NumQueues      int    `json:"num_queues"`
	DeviceType     string `json:"device_type"`

	IncludeDefaultRoutes bool              `json:"include_default_routes"`
	ContainerSettings    ContainerSettings `json:"container_settings"`
	FeatureControl       FeatureControl    `json:"feature_control"`

	// StateDir (kdd-cni) holds the journal of pending annotation clears.
	StateDir string `json:"state_dir"`

	// ReadinessGates are URLs that must answer 200 before ADD proceeds.
	ReadinessGates []string `json:"readiness_gates"`
	// PolicySetupTimeoutSeconds > 0 makes ADD wait (at most that long) for
	// Felix to write the endpoint's status file under EndpointStatusDir.
	PolicySetupTimeoutSeconds int    `json:"policy_setup_timeout_seconds"`
	EndpointStatusDir         string `json:"endpoint_status_dir"`
	// DataplaneOptions selects an external dataplane in Calico; refused here.
	DataplaneOptions map[string]any `json:"dataplane_options"`

	// RuntimeConfig carries what the runtime passes for declared capabilities.
	RuntimeConfig RuntimeConfig `json:"runtimeConfig"`

	LogLevel        string `json:"log_level"`
	LogFilePath     string `json:"log_file_path"`
	LogFileMaxSize  int    `json:"log_file_max_size"`
	LogFileMaxCount int    `json:"log_file_max_count"`
	LogFileMaxAge   int    `json:"log_file_max_age"`
	// LogFormat is "text" (default, key=value) or "json" (one object per line).
	LogFormat string `json:"log_format"`

	// IPAMSection shadows the embedded types.NetConf's ipam (json takes the
	// shallower field), so one decode reads every ipam key the plugins use.
	IPAMSection *IPAMSection `json:"ipam"`
	// Valid is cni.dev/valid-attachments (GC); nil when absent.
	Valid *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	// GCGraceSeconds (GC, kdd-cni): an attachment the lists leave out is
	// collected only once GC passes at least this far apart have all found
	// it stale (package sweep): install-cni's reclaimer sets it, since the
	// runtime may list a sandbox only once its ADD is done.
	GCGraceSeconds int `json:"kdd-cni.dev/gc-grace-seconds"`
	// GCSandboxes (GC, kdd-cni) are container IDs whose attachments are all
	// valid, whatever their interface: the runtime's CRI lists sandboxes,
	// not interfaces.
	GCSandboxes []string `json:"kdd-cni.dev/valid-sandboxes"`

	// IPAMRoutes are the dsts of ipam.routes: routes inside the container.
	IPAMRoutes []string `json:"-"`
	// InterfacePrefix is the host veth prefix (the first of
	// FELIX_INTERFACEPREFIX, else "cali").
	InterfacePrefix string `json:"-"`
}

// IPAMSection is the ipam section: its type and routes, and the keys the
// podcidr IPAM shim lets override the network's own.
type IPAMSection struct {
	Type   string `json:"type"`
	Routes []struct {
		Dst string `json:"dst"`
	} `json:"routes"`

	Nodename             string     `json:"nodename"`
	NodenameFile         string     `json:"nodename_file"`
	NodenameFileOptional bool       `json:"nodename_file_optional"`
	Hostname             string     `json:"hostname"`
	DatastoreType        string     `json:"datastore_type"`
	Kubernetes           Kubernetes `json:"kubernetes"`
	LogLevel             string     `json:"log_level"`
	LogFilePath          string     `json:"log_file_path"`
	LogFormat            string     `json:"log_format"`
	StateDir             string     `json:"state_dir"`
}

// PodAnnotationsCapability is the capability under which containerd and
// CRI-O pass the pod's annotations to plugins that declare it.
const PodAnnotationsCapability = "io.kubernetes.cri.pod-annotations"

// DefaultEndpointStatusDir is where Felix writes per-endpoint status files.
const DefaultEndpointStatusDir = "/var/run/calico/endpoint-status"

// RuntimeConfig is the runtime-supplied part of the configuration.
type RuntimeConfig struct {
	// PodAnnotations is nil when the runtime did not pass them.
	PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations"`
}

// Kubernetes is the `kubernetes` section.
type Kubernetes struct {
	Kubeconfig string `json:"kubeconfig"`
	APIRoot    string `json:"k8s_api_root"`
	// NodeName overrides the node whose podCIDRs are used (only for that).
	NodeName string `json:"node_name"`
}

// Policy is the `policy` section; the k8s_* keys are legacy API overrides.
type Policy struct {
	Type                 string `json:"type"`
	APIRoot              string `json:"k8s_api_root"`
	AuthToken            string `json:"k8s_auth_token"`
	ClientCertificate    string `json:"k8s_client_certificate"`
	ClientKey            string `json:"k8s_client_key"`
	CertificateAuthority string `json:"k8s_certificate_authority"`
}

// ContainerSettings is the `container_settings` section.
type ContainerSettings struct {
	AllowIPForwarding bool `json:"allow_ip_forwarding"`
}

// FeatureControl is accepted for compatibility; both features need calico-ipam.
type FeatureControl struct {
	IPAddrsNoIpam bool `json:"ip_addrs_no_ipam"`
	FloatingIPs   bool `json:"floating_ips"`
}

// networkName is the CNI spec's rule for a network name (libcni's).
var networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// maxNetworkName keeps the host veth's alias, which names the network, the
// container (64 hex digits from the runtimes) and the interface (at most
// 15 bytes), within the kernel's 255 bytes.
var maxNetworkName = naming.MaxAlias - len(naming.HostVethAlias("", strings.Repeat("0", 64), strings.Repeat("i", 15)))

// SupportedVersions are the CNI spec versions calico and podcidr speak.
var SupportedVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// MinMTU is the smallest MTU IPv4 allows.
const MinMTU = 68

// Load parses and validates a netconf, filling defaults. env supplies the
// environment seeds (DATASTORE_TYPE and friends).
func Load(stdin []byte, env Env) (*NetConf, error) {
	return load(stdin, env, false)
}

// LoadForIPAM loads the configuration as the podcidr IPAM shim sees it:
// nodename, datastore_type, kubernetes.* and the other keys set inside the
// ipam section override the network's top-level ones.
func LoadForIPAM(stdin []byte, env Env) (*NetConf, error) {
	return load(stdin, env, true)
}

func load(stdin []byte, env Env, ipamOverrides bool) (*NetConf, error) {
	c := &NetConf{NodenameFile: DefaultNodenameFile, MTUFile: DefaultMTUFile, NumQueues: 1, StateDir: DefaultStateDir}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, fmt.Errorf("failed to parse network configuration: %w", err)
	}
	if c.IPAMSection == nil {
		if ipamOverrides {
			return nil, errors.New("invalid configuration: no ipam section")
		}
		c.IPAMSection = &IPAMSection{}
	}
	c.IPAM.Type = c.IPAMSection.Type
	if ipamOverrides {
		c.applyIPAMOverlay(c.IPAMSection)
	}
	for i, r := range c.IPAMSection.Routes {
		if r.Dst == "" {
			return nil, fmt.Errorf("invalid ipam.routes[%d]: missing dst", i)
		}
		c.IPAMRoutes = append(c.IPAMRoutes, r.Dst)
	}
	c.InterfacePrefix = naming.InterfacePrefix(env.Getenv("FELIX_INTERFACEPREFIX"))
	if err := c.validate(env); err != nil {
		return nil, err
	}
	if c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.NetConf); err != nil {
			return nil, fmt.Errorf("failed to parse prevResult: %w", err)
		}
	}
	return c, nil
}

func (c *NetConf) validate(env Env) error {
	switch {
	case c.Name == "":
		return errors.New("invalid configuration: the network has no name")
	case !networkName.MatchString(c.Name):
		return fmt.Errorf("invalid network name %q: a letter or digit, then only letters, digits, '_', '.' and '-'", c.Name)
	case len(c.Name) > maxNetworkName:
		return fmt.Errorf("invalid network name: %d bytes, at most %d (the host veth's alias names it)", len(c.Name), maxNetworkName)
	}
	if c.IPAM.Type == "" {
		return errors.New("invalid configuration: ipam.type is required")
	}
	if t := c.Policy.Type; t != "" && t != "k8s" {
		return fmt.Errorf("unsupported policy.type %q: kdd-cni's pods take Kubernetes policy, enforced by Felix (\"k8s\", or none)", t)
	}
	if ds := c.Datastore(env); ds != DatastoreKubernetes {
		return fmt.Errorf("unsupported datastore_type %q: kdd-cni only supports the Kubernetes datastore (%q)", ds, DatastoreKubernetes)
	}
	if c.MTU != 0 && (c.MTU < MinMTU || c.MTU > 65535) {
		return fmt.Errorf("invalid mtu %d: must be 0 (the host's) or between %d and 65535", c.MTU, MinMTU)
	}
	for i, dst := range c.IPAMRoutes {
		if _, _, err := net.ParseCIDR(dst); err != nil {
			return fmt.Errorf("invalid ipam.routes[%d] dst %q: not a CIDR", i, dst)
		}
	}
	for key, root := range map[string]string{"kubernetes.k8s_api_root": c.Kubernetes.APIRoot, "policy.k8s_api_root": c.Policy.APIRoot} {
		if u, err := url.Parse(root); root != "" && (err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https")) {
			return fmt.Errorf("invalid %s %q: want an http(s) URL with a host", key, root)
		}
	}
	if c.LogFilePath != "" && !filepath.IsAbs(c.LogFilePath) {
		return fmt.Errorf("invalid log_file_path %q: must be an absolute path", c.LogFilePath)
	}
	if c.NumQueues == 0 {
		c.NumQueues = 1
	}
	if c.NumQueues < 0 || c.NumQueues > 1024 {
		return fmt.Errorf("invalid num_queues %d: must be between 1 and 1024", c.NumQueues)
	}
	if d := c.DeviceType; d != "" && d != "veth" {
		return fmt.Errorf("unsupported device_type %q: only veth is supported", d)
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("invalid state_dir %q: must be an absolute path", c.StateDir)
	}
	if !logging.ValidFormat(c.LogFormat) {
		return fmt.Errorf("invalid log_format %q: must be text or json", c.LogFormat)
	}
	if len(c.DataplaneOptions) > 0 {
		return errors.New("unsupported dataplane_options: kdd-cni only drives the Linux dataplane")
	}
	if c.PolicySetupTimeoutSeconds < 0 {
		return fmt.Errorf("invalid policy_setup_timeout_seconds %d: must be 0 (off) or positive", c.PolicySetupTimeoutSeconds)
	}
	if c.EndpointStatusDir == "" {
		c.EndpointStatusDir = DefaultEndpointStatusDir
	}
	for i, g := range c.ReadinessGates {
		if u, err := url.ParseRequestURI(g); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("invalid readiness_gates[%d] %q: must be an http(s) URL", i, g)
		}
	}
	return nil
}

// Datastore is the effective datastore type: the netconf's, else the
// DATASTORE_TYPE seed, else etcdv3 when etcd_endpoints or ETCD_ENDPOINTS is
// set (as Calico auto-detects), else kubernetes.
func (c *NetConf) Datastore(env Env) string {
	if c.DatastoreType != "" {
		return strings.ToLower(c.DatastoreType)
	}
	if v := env.seed("DATASTORE_TYPE"); v != "" {
		return strings.ToLower(v)
	}
	if c.EtcdEndpoints != "" || env.seed("ETCD_ENDPOINTS") != "" {
		return "etcdv3"
	}
	return DatastoreKubernetes
}

// applyIPAMOverlay copies the datastore and node keys set in the ipam section.
func (c *NetConf) applyIPAMOverlay(o *IPAMSection) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&c.Nodename, o.Nodename)
	set(&c.NodenameFile, o.NodenameFile)
	set(&c.Hostname, o.Hostname)
	set(&c.DatastoreType, o.DatastoreType)
	set(&c.Kubernetes.Kubeconfig, o.Kubernetes.Kubeconfig)
	set(&c.Kubernetes.APIRoot, o.Kubernetes.APIRoot)
	set(&c.Kubernetes.NodeName, o.Kubernetes.NodeName)
	set(&c.LogLevel, o.LogLevel)
	set(&c.LogFilePath, o.LogFilePath)
	set(&c.LogFormat, o.LogFormat)
	set(&c.StateDir, o.StateDir)
	c.NodenameFileOptional = c.NodenameFileOptional || o.NodenameFileOptional
}

// ValidAttachments is a GC request's cni.dev/valid-attachments; given is
// false when the key is absent.
func (c *NetConf) ValidAttachments() (valid map[types.GCAttachment]bool, given bool) {
	if c.Valid == nil {
		return nil, false
	}
	valid = map[types.GCAttachment]bool{}
	for _, a := range *c.Valid {
		valid[a] = true
	}
	return valid, true
}

// State is the node-local state directory (state_dir) and its layout.
func (c *NetConf) State() nodestate.Dir { return nodestate.Dir(c.StateDir) }

// GCGrace is how long an attachment must be found stale before GC
// collects it (0: at once).
func (c *NetConf) GCGrace() time.Duration { return time.Duration(c.GCGraceSeconds) * time.Second }

// GCLive reports whether an attachment is valid by the request's lists:
// cni.dev/valid-attachments, or a sandbox of kdd-cni.dev/valid-sandboxes.
func (c *NetConf) GCLive() func(types.GCAttachment) bool {
	valid, _ := c.ValidAttachments()
	live := map[string]bool{}
	for _, id := range c.GCSandboxes {
		live[id] = true
	}
	return func(a types.GCAttachment) bool { return valid[a] || live[a.ContainerID] }
}
