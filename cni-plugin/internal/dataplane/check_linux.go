package dataplane

import (
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

// Check verifies that the kernel holds what the plan says, on both sides,
// and that the host veth is the container interface's peer. The error names
// the first difference.
func Check(p plan.Plan, netnsPath string) error {
	host, err := checkHostSide(p)
	if err != nil {
		return err
	}
	var gw6 net.IP
	if p.HasIPv6 {
		if gw6, err = linkLocal(host); err != nil {
			return err
		}
	}
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error { return checkContainerSide(p, host, gw6) })
}

func checkHostSide(p plan.Plan) (netlink.Link, error) {
	link, err := netlinksafe.LinkByName(p.HostVeth)
	if err != nil {
		return nil, fmt.Errorf("host veth %q: %w", p.HostVeth, err)
	}
	a := link.Attrs()
	if link.Type() != "veth" {
		return nil, fmt.Errorf("host interface %q is a %s, not a veth", p.HostVeth, link.Type())
	}
	if a.HardwareAddr.String() != plan.HostMAC.String() {
		return nil, fmt.Errorf("host veth %q has MAC %s, want %s", p.HostVeth, a.HardwareAddr, plan.HostMAC)
	}
	if a.Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("host veth %q is down", p.HostVeth)
	}
	if p.MTU > 0 && a.MTU != p.MTU {
		return nil, fmt.Errorf("host veth %q has MTU %d, want %d", p.HostVeth, a.MTU, p.MTU)
	}
	for _, addr := range p.HostRoutes {
		owner, err := routeOwner(addr)
		if err != nil {
			return nil, fmt.Errorf("host route to %s: %w", addr.String(), err)
		}
		if owner != p.HostVeth {
			return nil, fmt.Errorf("host route to %s goes through %q, want %q", addr.String(), owner, p.HostVeth)
		}
	}
	return link, checkSysctls(p.HostSysctls)
}

// checkContainerSide checks the container interface; gw6 is the host veth's
// link-local address, the pod's IPv6 next hop.
func checkContainerSide(p plan.Plan, host netlink.Link, gw6 net.IP) error {
	link, err := netlinksafe.LinkByName(p.IfName)
	if err != nil {
		return fmt.Errorf("container interface %q: %w", p.IfName, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("container interface %q is down", p.IfName)
	}
	if m := p.ContainerMAC; m != nil && link.Attrs().HardwareAddr.String() != m.String() {
		return fmt.Errorf("container interface %q has MAC %s, want %s", p.IfName, link.Attrs().HardwareAddr, m)
	}
	if err := checkPeer(p.IfName, host); err != nil {
		return err
	}
	if err := checkAddresses(p, link); err != nil {
		return err
	}
	if err := checkRoutes(p, link, gw6); err != nil {
		return err
	}
	return checkSysctls(p.ContainerSysctls)
}

// checkPeer compares the veth's peer_ifindex statistic with the host veth.
func checkPeer(ifName string, host netlink.Link) error {
	et, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("failed to open ethtool: %w", err)
	}
	defer et.Close()
	stats, err := et.Stats(ifName)
	if err != nil {
		return fmt.Errorf("failed to read ethtool stats of %q: %w", ifName, err)
	}
	peer, ok := stats["peer_ifindex"]
	if !ok {
		return fmt.Errorf("container interface %q is not a veth (no peer_ifindex)", ifName)
	}
	if int(peer) != host.Attrs().Index {
		return fmt.Errorf("container interface %q is paired with ifindex %d, not host veth %q (ifindex %d)",
			ifName, peer, host.Attrs().Name, host.Attrs().Index)
	}
	return nil
}

func checkAddresses(p plan.Plan, link netlink.Link) error {
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("failed to list addresses of %q: %w", p.IfName, err)
	}
	var have []string
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		have = append(have, a.IPNet.String())
	}
	var want []string
	for _, a := range p.Addresses {
		want = append(want, a.String())
	}
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		return fmt.Errorf("container interface %q has addresses %v, want %v", p.IfName, have, want)
	}
	return nil
}

func checkRoutes(p plan.Plan, link netlink.Link, gw6 net.IP) error {
	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("failed to list routes of %q: %w", p.IfName, err)
	}
	has := func(dst net.IPNet, gw net.IP) bool {
		return slices.ContainsFunc(routes, func(r netlink.Route) bool {
			d := r.Dst
			if d == nil { // the kernel reports default routes without Dst
				if dst.IP.To4() != nil {
					d = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
				} else {
					d = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
				}
			}
			return d.String() == dst.String() && r.Gw.Equal(gw)
		})
	}
	for _, r := range p.Routes {
		gw := r.GW
		if r.ViaHostLinkLocal {
			gw = gw6
		}
		if !has(r.Dst, gw) {
			return fmt.Errorf("container interface %q lacks route %s via %s", p.IfName, r.Dst.String(), gw)
		}
	}
	return nil
}
