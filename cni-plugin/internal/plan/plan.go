// Package plan turns a configuration and an IPAM result into the exact
// kernel state a pod gets (a Plan) and into the CNI result. It is pure: the
// dataplane package applies and checks a Plan.
package plan

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Fixed addresses of Calico's point-to-point veth model.
var (
	// HostMAC is set on every host-side veth; Felix expects it.
	HostMAC = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	// GatewayV4 is the pod's IPv4 next hop; proxy ARP on the host veth answers for it.
	// The IPv6 next hop is the host veth's own link-local address, read from
	// the kernel once the pair is up (Route.ViaHostLinkLocal): which one it
	// is depends on the node's addr_gen_mode.
	GatewayV4 = net.IPv4(169, 254, 1, 1).To4()
)

// maxAlias is the kernel's limit on an interface alias (IFALIASZ - 1).
const maxAlias = 255

// Input is what a plan is built from.
type Input struct {
	HostVeth string
	// HostAlias marks the host veth with its owner (naming.HostVethAlias).
	HostAlias string
	IfName    string
	// ContainerMAC is the container interface's MAC (nil: the kernel's).
	ContainerMAC net.HardwareAddr
	MTU          int // 0: kernel default
	NumQueues    int
	IPs          []*types100.IPConfig
	// Routes are ipam.routes dsts; empty means default routes.
	Routes               []string
	IncludeDefaultRoutes bool
	AllowIPForwarding    bool
}

// Route is a route inside the pod: via GW, or, with LinkScope, straight
// out of the interface (the route that makes the IPv4 gateway reachable).
type Route struct {
	Dst       net.IPNet
	GW        net.IP
	LinkScope bool
	// ViaHostLinkLocal: the next hop is the host veth's link-local address
	// (IPv6), known only once the veth is up; GW is unset.
	ViaHostLinkLocal bool
}

// Sysctl is one /proc/sys setting; Optional ones only warn on failure.
type Sysctl struct {
	Key      string // e.g. net/ipv4/conf/cali1/proxy_arp
	Value    string
	Optional bool
}

// Plan is the pod's network, host side and container side.
type Plan struct {
	HostVeth  string
	HostAlias string
	IfName    string
	// ContainerMAC is set on the container interface at creation (nil: the
	// kernel's) and verified by CHECK.
	ContainerMAC net.HardwareAddr
	MTU          int
	NumQueues    int
	// Addresses are the pod IPs as /32 and /128.
	Addresses        []net.IPNet
	HasIPv4, HasIPv6 bool
	// Routes are the pod's, in the order they are added: for IPv4 first the
	// link-scope route to the gateway (proxy ARP on the host veth answers
	// for it), then the routes via the gateways.
	Routes []Route
	// HostRoutes are the node's routes to the pod: each address, scope
	// link, through the host veth.
	HostRoutes       []net.IPNet
	HostSysctls      []Sysctl
	ContainerSysctls []Sysctl
}

// Build computes the plan.
func Build(in Input) (Plan, error) {
	p := Plan{HostVeth: in.HostVeth, HostAlias: in.HostAlias, IfName: in.IfName, ContainerMAC: in.ContainerMAC,
		MTU: in.MTU, NumQueues: max(in.NumQueues, 1)}
	if len(in.IPs) == 0 {
		return p, errors.New("failed to plan the pod network: IPAM returned no IP addresses")
	}
	if len(in.HostAlias) > maxAlias {
		return p, fmt.Errorf("failed to plan the pod network: host veth alias %q is longer than %d bytes (network name too long?)", in.HostAlias, maxAlias)
	}
	for _, ipc := range in.IPs {
		if ip4 := ipc.Address.IP.To4(); ip4 != nil {
			p.HasIPv4 = true
			p.Addresses = append(p.Addresses, net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)})
		} else {
			p.HasIPv6 = true
			p.Addresses = append(p.Addresses, net.IPNet{IP: ipc.Address.IP, Mask: net.CIDRMask(128, 128)})
		}
	}
	p.HostRoutes = p.Addresses
	if p.HasIPv4 {
		p.Routes = append(p.Routes, Route{Dst: net.IPNet{IP: GatewayV4, Mask: net.CIDRMask(32, 32)}, LinkScope: true})
	}
	dsts := in.Routes
	if len(dsts) == 0 || in.IncludeDefaultRoutes {
		dsts = append(append([]string{}, dsts...), "0.0.0.0/0", "::/0")
	}
	seen := map[string]bool{}
	for _, d := range dsts {
		_, dst, err := net.ParseCIDR(d)
		if err != nil {
			return p, fmt.Errorf("invalid route destination %q: %w", d, err)
		}
		if seen[dst.String()] {
			continue
		}
		seen[dst.String()] = true
		switch v4 := dst.IP.To4() != nil; {
		case v4 && p.HasIPv4:
			p.Routes = append(p.Routes, Route{Dst: *dst, GW: GatewayV4})
		case !v4 && p.HasIPv6:
			p.Routes = append(p.Routes, Route{Dst: *dst, ViaHostLinkLocal: true})
		}
	}
	p.HostSysctls, p.ContainerSysctls = sysctls(p, in.AllowIPForwarding)
	return p, nil
}

func sysctls(p Plan, allowForwarding bool) (host, container []Sysctl) {
	v := p.HostVeth
	if p.HasIPv4 {
		host = append(host,
			Sysctl{Key: "net/ipv4/conf/" + v + "/route_localnet", Value: "1"},
			Sysctl{Key: "net/ipv4/neigh/" + v + "/proxy_delay", Value: "0", Optional: true},
			Sysctl{Key: "net/ipv4/conf/" + v + "/proxy_arp", Value: "1"},
			Sysctl{Key: "net/ipv4/conf/" + v + "/forwarding", Value: "1"})
	}
	if p.HasIPv6 {
		host = append(host,
			Sysctl{Key: "net/ipv6/conf/" + v + "/accept_dad", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/" + v + "/disable_ipv6", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/" + v + "/proxy_ndp", Value: "1"},
			Sysctl{Key: "net/ipv6/conf/" + v + "/forwarding", Value: "1"})
	}
	host = append(host, Sysctl{Key: "net/ipv6/conf/" + v + "/accept_ra", Value: "0", Optional: true})

	fwd := "0"
	if allowForwarding {
		fwd = "1"
	}
	if p.HasIPv6 {
		container = append(container,
			Sysctl{Key: "net/ipv6/conf/all/disable_ipv6", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/default/disable_ipv6", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/lo/disable_ipv6", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/" + p.IfName + "/accept_dad", Value: "0"},
			Sysctl{Key: "net/ipv6/conf/all/forwarding", Value: fwd})
	}
	if p.HasIPv4 {
		container = append(container, Sysctl{Key: "net/ipv4/ip_forward", Value: fwd})
	}
	return host, container
}

// Result is the CNI result Calico prints: interfaces [host veth, container
// interface with MAC, MTU (when set; the kernel's default otherwise) and
// sandbox], every IP as /32 or /128 on interface 1 with no gateway, routes
// and DNS as IPAM returned them.
func Result(p Plan, ipam *types100.Result, containerMAC, sandbox string) *types100.Result {
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: p.HostVeth},
			{Name: p.IfName, Mac: containerMAC, Mtu: p.MTU, Sandbox: sandbox},
		},
		Routes: ipam.Routes,
		DNS:    ipam.DNS,
	}
	for _, a := range p.Addresses {
		r.IPs = append(r.IPs, &types100.IPConfig{Interface: types100.Int(1), Address: a})
	}
	return r
}

// ContainerMAC is the MAC a (prev)result reports for the container interface
// ifName in sandbox; nil when it reports none.
func ContainerMAC(res types.Result, ifName, sandbox string) (net.HardwareAddr, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("failed to convert result: %w", err)
	}
	for _, i := range r.Interfaces {
		if i.Name == ifName && i.Sandbox == sandbox && i.Mac != "" {
			mac, err := net.ParseMAC(i.Mac)
			if err != nil {
				return nil, fmt.Errorf("invalid MAC %q for %s in prevResult: %w", i.Mac, ifName, err)
			}
			return mac, nil
		}
	}
	return nil, nil
}

// IPsFromResult extracts the IP configs of a (prev)result of any version.
func IPsFromResult(res types.Result) ([]*types100.IPConfig, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("failed to convert result: %w", err)
	}
	return r.IPs, nil
}
