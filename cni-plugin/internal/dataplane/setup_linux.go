package dataplane

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

// Result is what Setup created.
type Result struct {
	ContainerMAC string
	// HostIndex is the ifindex of the host veth this Setup created: later
	// steps and rollback act on it, never on a same-named link of another
	// sandbox.
	HostIndex int
}

// Setup builds the pod network. If it fails after creating the veth pair,
// it deletes the pair before returning; it never touches an interface it
// did not create.
func Setup(p plan.Plan, netnsPath string) (Result, error) {
	if err := deleteHostVeth(p.HostVeth); err != nil {
		return Result{}, err
	}
	var r Result
	err := ns.WithNetNSPath(netnsPath, func(hostNS ns.NetNS) error {
		var err error
		if r.HostIndex, err = createVeth(p, hostNS); err != nil {
			return err
		}
		if err := hostNS.Do(func(ns.NetNS) error { return setupHostVeth(p, r.HostIndex) }); err != nil {
			return err
		}
		r.ContainerMAC, err = setupContainerIf(p, hostNS, r.HostIndex)
		return err
	})
	if err == nil {
		err = addHostRoutes(p, r.HostIndex)
	}
	if err != nil && r.HostIndex != 0 {
		return Result{}, errors.Join(err, Remove(p, r.HostIndex))
	}
	return r, err
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
func createVeth(p plan.Plan, hostNS ns.NetNS) (int, error) {
	q := uint32(p.NumQueues)
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: p.IfName, MTU: p.MTU, NumTxQueues: int(q), NumRxQueues: int(q), HardwareAddr: p.ContainerMAC},
		PeerName:         p.HostVeth,
		PeerHardwareAddr: plan.HostMAC,
		PeerNamespace:    netlink.NsFd(int(hostNS.Fd())),
		PeerMTU:          uint32(max(p.MTU, 0)),
		PeerNumTxQueues:  q,
		PeerNumRxQueues:  q,
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, syscall.EEXIST) {
			return 0, fmt.Errorf("failed to create veth %s/%s: an interface of that name already exists", p.IfName, p.HostVeth)
		}
		return 0, fmt.Errorf("failed to create veth %s/%s: %w", p.IfName, p.HostVeth, err)
	}
	// The container end's link index (IFLA_LINK) is the host end's ifindex.
	l, err := netlinksafe.LinkByName(p.IfName)
	if err != nil {
		return 0, fmt.Errorf("failed to find the new interface %q: %w", p.IfName, err)
	}
	return l.Attrs().ParentIndex, nil
}

// hostLink returns the host veth created by this Setup, by index, and
// fails if a same-named link of another sandbox replaced it.
func hostLink(p plan.Plan, index int) (netlink.Link, error) {
	link, err := netlink.LinkByIndex(index)
	if err != nil || link.Attrs().Name != p.HostVeth {
		return nil, fmt.Errorf("failed to find host veth %q (ifindex %d): it was removed or replaced", p.HostVeth, index)
	}
	return link, nil
}

func setupHostVeth(p plan.Plan, index int) error {
	link, err := hostLink(p, index)
	if err != nil {
		return err
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
	if p.HasIPv6 {
		if err := ensureLinkLocal(p.HostVeth); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("failed to set %q up: %w", p.HostVeth, err)
	}
	return nil
}

// Reading the host veth's link-local address: the kernel adds it once both
// ends are up (carrier), within moments.
const (
	linkLocalTries = 20
	linkLocalWait  = 25 * time.Millisecond
)

// hostLinkLocal reads the host veth's IPv6 link-local address (not
// tentative), waiting briefly for the kernel to add it.
func hostLinkLocal(p plan.Plan, index int) (net.IP, error) {
	link, err := hostLink(p, index)
	if err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		ip, err := linkLocal(link)
		if err == nil || i == linkLocalTries-1 {
			return ip, err
		}
		time.Sleep(linkLocalWait)
	}
}

// linkLocal is link's usable IPv6 link-local address.
func linkLocal(link netlink.Link) (net.IP, error) {
	addrs, err := netlinksafe.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		return nil, fmt.Errorf("failed to list the IPv6 addresses of %q: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return a.IP, nil
		}
	}
	return nil, fmt.Errorf("host veth %q has no IPv6 link-local address (IPv6 disabled on the node?)", link.Attrs().Name)
}

func setupContainerIf(p plan.Plan, hostNS ns.NetNS, hostIndex int) (string, error) {
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
	var gw6 net.IP
	if p.HasIPv6 { // both ends are up: the host end gets its link-local address
		err := hostNS.Do(func(ns.NetNS) (err error) { gw6, err = hostLinkLocal(p, hostIndex); return err })
		if err != nil {
			return "", fmt.Errorf("failed to find the pod's IPv6 gateway: %w", err)
		}
	}
	for _, r := range p.Routes {
		dst, gw := r.Dst, r.GW
		if r.ViaHostLinkLocal {
			gw = gw6
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: gw}
		if r.LinkScope {
			route.Scope = netlink.SCOPE_LINK
		}
		if err := netlink.RouteAdd(route); err != nil {
			return "", fmt.Errorf("failed to add route %s via %s on %q: %w", dst.String(), gw, p.IfName, err)
		}
	}
	return link.Attrs().HardwareAddr.String(), nil
}

// addHostRoutes adds <ip>/32 (/128) dev <hostVeth> scope link. An identical
// route already there is fine (Felix may have added it); a route for the IP
// through another interface is an error, never silently replaced.
func addHostRoutes(p plan.Plan, index int) error {
	link, err := hostLink(p, index)
	if err != nil {
		return err
	}
	for _, a := range p.HostRoutes {
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
