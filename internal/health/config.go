package health

import (
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// Input is a plugin configuration as the checks read it.
type Input struct {
	Conf *netconf.NetConf
	// IPAM is the configuration decoded generically (podcidr.Parse); nil
	// with IPAMErr when its ipam section is invalid.
	IPAM    *podcidr.Conf
	IPAMErr error
	// HostLocal: the addresses come from host-local over the podCIDRs.
	HostLocal bool
	Env       netconf.Env
	// API returns the client for the configured identity.
	API func() (*kube.Client, error)
}

// ForConfig is the checks' view of a node configured by in. A bad ipam
// section is a failure of its own (Check then sends no request).
func ForConfig(in Input) (Node, []Finding) {
	if in.IPAMErr != nil {
		return Node{}, []Finding{{Check: "config", Severity: Fail, Message: in.IPAMErr.Error()}}
	}
	n := Node{Families: in.IPAM.Families(), Journal: in.Conf.State().Journal(), StateDir: in.Conf.StateDir}
	n.API, n.APIErr = in.API()
	if n.APIErr != nil {
		n.API = nil
	}
	var nodename string
	if nodename, n.NodeErr = in.Conf.ResolveNodename(in.Env); n.NodeErr == nil {
		n.Node = in.Conf.PodCIDRNode(nodename)
	}
	if in.HostLocal {
		if b, err := in.IPAM.ForRelease(); err == nil {
			n.HostLocal = b
		}
	}
	return n, nil
}
