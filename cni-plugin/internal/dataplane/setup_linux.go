package dataplane

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

// Setup builds the pod network and returns the container interface's MAC.
// If it fails after creating the veth pair, it deletes the pair before
// returning; it never touches an interface it did not create.
func Setup(p plan.Plan, netnsPath string) (string, error) {
	if err := deleteHostVeth(p.HostVeth); err != nil {
		return "", err
	}
	var mac string
	created := false
	err := ns.WithNetNSPath(netnsPath, func(hostNS ns.NetNS) error {
		if err := createVeth(p, hostNS); err != nil {
			return err
		}
		created = true
		if err := hostNS.Do(func(ns.NetNS) error { return setupHostVeth(p) }); err != nil {
			return err
		}
		var err error
		mac, err = setupContainerIf(p)
		return err
	})
	if err == nil {
		err = addHostRoutes(p)
	}
	if err != nil && created {
		return "", errors.Join(err, Remove(p))
	}
	return mac, err
}

// deleteHostVeth removes a host veth left by an earlier sandbox of the same
// pod (its peer, the old container interface, goes with it).
func deleteHostVeth(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to look up host veth %q: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return fmt.Errorf("failed to delete stale host veth %q: %w", name, err)
	}
	return nil
}

// createVeth creates the pair from inside the container namespace with the
// peer born directly in the host namespace, already carrying the fixed MAC:
// no namespace move (slow under concurrency) and no MAC race with udev.
func createVeth(p plan.Plan, hostNS ns.NetNS) error {
	q := uint32(p.NumQueues)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: p.IfName, MTU: p.MTU, NumTxQueues: int(q), NumRxQueues: int(q)},
		PeerName:         p.HostVeth,
		PeerHardwareAddr: plan.HostMAC,
		PeerNamespace:    netlink.NsFd(int(hostNS.Fd())),
		PeerMTU:          uint32(max(p.MTU, 0)),
		PeerNumTxQueues:  q,
		PeerNumRxQueues:  q,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("failed to create veth %s/%s: an interface of that name already exists", p.IfName, p.HostVeth)
		}
		return fmt.Errorf("failed to create veth %s/%s: %w", p.IfName, p.HostVeth, err)
	}
	return nil
}

func setupHostVeth(p plan.Plan) error {
	link, err := netlinksafe.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("failed to find host veth %q: %w", p.HostVeth, err)
	}
	if link.Attrs().HardwareAddr.String() != plan.HostMAC.String() {
		if err := netlink.LinkSetHardwareAddr(link, plan.HostMAC); err != nil {
			return fmt.Errorf("failed to set MAC of %q: %w", p.HostVeth, err)
		}
	}
	if p.HostAlias != "" {
		if err := netlink.LinkSetAlias(link, p.HostAlias); err != nil {
			return fmt.Errorf("failed to set alias of %q: %w", p.HostVeth, err)
		}
	}
	if err := writeSysctls(p.HostSysctls); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to set %q up: %w", p.HostVeth, err)
	}
	return nil
}

func setupContainerIf(p plan.Plan) (string, error) {
	link, err := netlinksafe.LinkByName(p.IfName)
	if err != nil {
		return "", fmt.Errorf("failed to find container interface %q: %w", p.IfName, err)
	}
	// accept_dad=0 before the link comes up, or DAD delays the IPv6 address.
	if err := writeSysctls(p.ContainerSysctls); err != nil {
		return "", err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("failed to set %q up: %w", p.IfName, err)
	}
	for _, a := range p.Addresses {
		addr := &netlink.Addr{IPNet: &a}
		if a.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return "", fmt.Errorf("failed to add address %s to %q: %w", a.String(), p.IfName, err)
		}
	}
	if p.HasIPv4 {
		// The gateway is reachable through this link-scope /32; proxy ARP on
		// the host veth answers for it.
		gw := &net.IPNet{IP: plan.GatewayV4, Mask: net.CIDRMask(32, 32)}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: gw, Scope: netlink.SCOPE_LINK}); err != nil {
			return "", fmt.Errorf("failed to add route to %s on %q: %w", gw, p.IfName, err)
		}
	}
	for _, r := range p.Routes {
		dst := r.Dst
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: r.GW}); err != nil {
			return "", fmt.Errorf("failed to add route %s via %s on %q: %w", dst.String(), r.GW, p.IfName, err)
		}
	}
	return link.Attrs().HardwareAddr.String(), nil
}

// addHostRoutes adds <ip>/32 (/128) dev <hostVeth> scope link. An identical
// route already there is fine (Felix may have added it); a route for the IP
// through another interface is an error, never silently replaced.
func addHostRoutes(p plan.Plan) error {
	link, err := netlinksafe.LinkByName(p.HostVeth)
	if err != nil {
		return fmt.Errorf("failed to find host veth %q: %w", p.HostVeth, err)
	}
	for _, a := range p.Addresses {
		dst := a
		err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Scope: netlink.SCOPE_LINK})
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("failed to add host route %s dev %s: %w", dst.String(), p.HostVeth, err)
		}
		owner, err := routeOwner(dst)
		if err != nil {
			return err
		}
		if owner != p.HostVeth {
			return fmt.Errorf("failed to add host route %s dev %s: a route for it already exists through interface %q", dst.String(), p.HostVeth, owner)
		}
	}
	return nil
}

// routeOwner names the interface of the main-table route to exactly dst.
func routeOwner(dst net.IPNet) (string, error) {
	family := netlink.FAMILY_V4
	if dst.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	routes, err := netlinksafe.RouteListFiltered(family, &netlink.Route{Dst: &dst, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("failed to list routes to %s: %w", dst.String(), err)
	}
	for _, r := range routes {
		if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
			return l.Attrs().Name, nil
		}
		return fmt.Sprintf("ifindex %d", r.LinkIndex), nil
	}
	return "", fmt.Errorf("failed to find the existing route to %s", dst.String())
}
