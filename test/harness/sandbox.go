package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Plugin is a CNI plugin binary with the network configuration a runtime
// hands it.
type Plugin struct {
	Name   string // for messages, e.g. "kdd-cni" or "calico"
	Binary string // the plugin's path
	Path   string // CNI_PATH
	Conf   []byte // the network configuration (with cniVersion)
}

// Sandbox is one pod sandbox as a container runtime drives it: the Pod it
// belongs to, its container ID and network namespace, the CNI_ARGS the
// runtime passes, and what its last ADD returned (the prevResult of CHECK).
// The integration, calico and faults suites all drive pods through it.
type Sandbox struct {
	Namespace, Name string // the Pod's
	ContainerID     string
	Netns           *NetNS // nil once gone: CNI_NETNS is then empty
	IfName          string // "eth0" when empty
	// HostVeth is the host side the plugin names for this pod.
	HostVeth string
	// ExtraArgs are appended to CNI_ARGS (e.g. "IP=10.0.0.5").
	ExtraArgs string
	// Raw and Result are the last successful ADD's output.
	Raw    []byte
	Result *types100.Result
}

// Args is the CNI_ARGS a kubelet's runtime passes for the sandbox.
func (s *Sandbox) Args() string {
	args := fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=abc",
		s.Namespace, s.Name, s.ContainerID)
	if s.ExtraArgs != "" {
		args += ";" + s.ExtraArgs
	}
	return args
}

// Call is cmd of pl for the sandbox with conf (nil: pl.Conf), as a runtime
// makes it: STATUS and GC name no interface and no pod.
func (s *Sandbox) Call(pl Plugin, cmd string, conf []byte) CNICall {
	if conf == nil {
		conf = pl.Conf
	}
	c := CNICall{Binary: pl.Binary, Command: cmd, ContainerID: s.ContainerID, IfName: s.IfName,
		Path: pl.Path, Config: conf, Args: s.Args()}
	if c.IfName == "" {
		c.IfName = "eth0"
	}
	if s.Netns != nil {
		c.Netns = s.Netns.Path
	}
	if cmd == "STATUS" || cmd == "GC" { // of the network, not of a pod
		c.IfName, c.Args = "", ""
	}
	return c
}

// Add runs ADD of pl for s in the node namespace and keeps its result.
func (cp *ControlPlane) Add(ctx context.Context, pl Plugin, s *Sandbox) error {
	r := cp.RunCNI(ctx, s.Call(pl, "ADD", nil))
	if r.Err != nil {
		return fmt.Errorf("%s ADD %s/%s: %w", pl.Name, s.Namespace, s.Name, r.Err)
	}
	return s.SetResult(pl.Conf, r.Stdout)
}

// Check runs CHECK of pl for s with its last ADD's result as prevResult.
func (cp *ControlPlane) Check(ctx context.Context, pl Plugin, s *Sandbox) CNIResult {
	conf, err := WithPrevResult(pl.Conf, s.Raw)
	if err != nil {
		return CNIResult{Err: err}
	}
	return cp.RunCNI(ctx, s.Call(pl, "CHECK", conf))
}

// Del runs DEL of pl for s.
func (cp *ControlPlane) Del(ctx context.Context, pl Plugin, s *Sandbox) error {
	if r := cp.RunCNI(ctx, s.Call(pl, "DEL", nil)); r.Err != nil {
		return fmt.Errorf("%s DEL %s/%s: %w", pl.Name, s.Namespace, s.Name, r.Err)
	}
	return nil
}

// SetResult parses raw, an ADD's output for conf's cniVersion, as the
// sandbox's result.
func (s *Sandbox) SetResult(conf, raw []byte) error {
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(conf, &v); err != nil {
		return fmt.Errorf("failed to read cniVersion: %w", err)
	}
	res, err := version.NewResult(v.CNIVersion, raw)
	if err != nil {
		return fmt.Errorf("failed to parse ADD result %s: %w", raw, err)
	}
	if s.Result, err = types100.NewResultFromResult(res); err != nil {
		return fmt.Errorf("failed to convert ADD result %s: %w", raw, err)
	}
	s.Raw = raw
	return nil
}

// IPs are the addresses of the last ADD's result, without masks.
func (s *Sandbox) IPs() []net.IP {
	var ips []net.IP
	if s.Result != nil {
		for _, c := range s.Result.IPs {
			ips = append(ips, c.Address.IP)
		}
	}
	return ips
}

// WithPrevResult is conf with prev (an ADD's output) as its prevResult.
func WithPrevResult(conf, prev []byte) ([]byte, error) {
	var c map[string]any
	if err := json.Unmarshal(conf, &c); err != nil {
		return nil, fmt.Errorf("failed to decode the configuration: %w", err)
	}
	var p map[string]any
	if err := json.Unmarshal(prev, &p); err != nil {
		return nil, fmt.Errorf("failed to decode prevResult %q: %w", prev, err)
	}
	c["prevResult"] = p
	return json.Marshal(c)
}
