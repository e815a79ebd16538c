package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
)

// The cluster network: a dual-stack bridge in the control plane's namespace
// that every Host's uplink joins. The apiserver listens on its IPv4 gateway
// address; the IPv6 one lets a node report an IPv6 address first.
var (
	ClusterGateway  = &net.IPNet{IP: net.IPv4(10, 99, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}
	ClusterGateway6 = &net.IPNet{IP: net.ParseIP("fd00:99::1"), Mask: net.CIDRMask(64, 128)}
	clusterBridge   = "kddbr0"
)

// noDAD addresses an interface for use at once: duplicate address detection
// would hold an IPv6 address tentative (unusable) for a second or more, and
// the cluster network's addresses are unique by construction.
func noDAD(ipn *net.IPNet) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipn}
	if ipn.IP.To4() == nil {
		a.Flags = syscall.IFA_F_NODAD
	}
	return a
}

// addClusterBridge creates the cluster network's bridge with the gateway address.
func (cp *ControlPlane) addClusterBridge() error {
	return cp.Node.Do(func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: clusterBridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create bridge %s: %w", clusterBridge, err)
		}
		for _, gw := range []*net.IPNet{ClusterGateway, ClusterGateway6} {
			if err := netlink.AddrAdd(br, noDAD(gw)); err != nil {
				return fmt.Errorf("address bridge %s with %s: %w", clusterBridge, gw, err)
			}
		}
		return netlink.LinkSetUp(br)
	})
}

// HostPaths are the host paths a node's DaemonSet pods and daemons use. Each
// Host sees its own directory at each of them (bind mounts in its private
// mount namespace), so several Hosts on one machine never share files, and
// the manifests use the standard paths unchanged.
var HostPaths = []string{"/opt/cni/bin", "/etc/cni/net.d", "/var/lib/kdd-cni", "/var/lib/cni",
	"/var/lib/calico", "/var/run/calico", "/var/log/calico", "/var/log/pods", "/var/log/containers", "/run/containerd", "/run/flannel"}

// Host is one machine of a cluster: its own network namespace (uplink on
// the cluster bridge with an IPv4 and an IPv6 address, default routes via
// the gateways) and its own mount namespace (HostPaths private to it).
// Processes started on it run in both.
type Host struct {
	Name string
	IP   net.IP // IPv4, the node's address unless it is IPv6-primary
	IP6  net.IP
	// Dir holds the host's files; Root(p) is what the host sees at p.
	Dir   string
	NetNS *NetNS

	cp       *ControlPlane
	launcher *launcher
	mountNS  string // a bind mount of the namespace (nsenter --mount=)
}

// AddHost makes host number index (1..200) of a Cluster control plane.
// Stop it with Close.
func (cp *ControlPlane) AddHost(name string, index int) (h *Host, err error) {
	if !cp.opts.Cluster {
		return nil, errors.New("AddHost needs a control plane started with Cluster")
	}
	ip := net.IPv4(10, 99, 0, byte(10+index)).To4()
	ip6 := net.ParseIP(fmt.Sprintf("fd00:99::%d", 10+index))
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-host-%s-", nsPrefix, os.Getpid(), name))
	if err != nil {
		return nil, err
	}
	h = &Host{Name: name, IP: ip, IP6: ip6, Dir: dir, cp: cp}
	defer func() {
		if err != nil {
			h.Close()
			h = nil
		}
	}()
	if h.NetNS, err = NewNetNS("host"); err != nil {
		return h, err
	}
	if h.launcher, err = newLauncher(h.NetNS); err != nil {
		return h, err
	}
	if err := h.addUplink(index); err != nil {
		return h, err
	}
	return h, h.makeMountNS()
}

// addUplink joins the host to the cluster bridge.
func (h *Host) addUplink(index int) error {
	peer := fmt.Sprintf("kddh%d", index)
	target, err := os.Open(h.NetNS.Path)
	if err != nil {
		return err
	}
	defer target.Close()
	var hostEnd netlink.Link
	err = h.cp.Node.Do(func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: peer}, PeerName: "eth0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("create uplink of %s: %w", h.Name, err)
		}
		br, err := netlink.LinkByName(clusterBridge)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(veth, br); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(veth); err != nil {
			return err
		}
		if hostEnd, err = netlink.LinkByName("eth0"); err != nil {
			return err
		}
		return netlink.LinkSetNsFd(hostEnd, int(target.Fd()))
	})
	if err != nil {
		return err
	}
	return h.NetNS.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, a := range []*net.IPNet{{IP: h.IP, Mask: ClusterGateway.Mask}, {IP: h.IP6, Mask: ClusterGateway6.Mask}} {
			if err := netlink.AddrAdd(l, noDAD(a)); err != nil {
				return fmt.Errorf("address the uplink of %s with %s: %w", h.Name, a, err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		for _, gw := range []net.IP{ClusterGateway.IP, ClusterGateway6.IP} {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw}); err != nil {
				return fmt.Errorf("default route of %s via %s: %w", h.Name, gw, err)
			}
		}
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile("/proc/sys/"+k, []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
}

// makeMountNS creates the host's mount namespace, kept by a bind mount
// under Dir, with each of HostPaths bound to the host's own directory.
func (h *Host) makeMountNS() error {
	nsDir := filepath.Join(h.Dir, "ns")
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	// unshare --mount=FILE needs FILE on a private mount.
	if err := syscall.Mount(nsDir, nsDir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", nsDir, err)
	}
	if err := syscall.Mount("", nsDir, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", nsDir, err)
	}
	h.mountNS = filepath.Join(nsDir, "mnt")
	if err := os.WriteFile(h.mountNS, nil, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("unshare", "--mount="+h.mountNS, "--propagation", "private", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("create the mount namespace of %s: %w: %s", h.Name, err, out)
	}
	var script strings.Builder
	for _, p := range HostPaths {
		if err := h.cp.mountPoint(p); err != nil {
			return err
		}
		if err := os.MkdirAll(h.Root(p), 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %q %q && ", h.Root(p), p)
	}
	script.WriteString("true")
	if out, err := exec.Command("nsenter", "--mount="+h.mountNS, "sh", "-c", script.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("bind the host paths of %s: %w: %s", h.Name, err, out)
	}
	return nil
}

// Root is the directory the host sees at path p (one of HostPaths).
func (h *Host) Root(p string) string { return filepath.Join(h.Dir, "root", p) }

// Command is a command that runs in the host's mount namespace (start it
// with Start or StartProcess, which add its network namespace).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--mount=" + h.mountNS, "--", name}, args...)...)
}

// Run runs cmd on the host and waits for it.
func (h *Host) Run(cmd *exec.Cmd) error {
	if err := h.launcher.start(cmd, true); err != nil {
		return err
	}
	return cmd.Wait()
}

// StartProcess starts a long-running daemon on the host, logging to Dir.
func (h *Host) StartProcess(name, bin string, args ...string) (*Process, error) {
	return startCmd(h.launcher, h.Dir, name, h.Command(bin, args...))
}

// Do runs fn on a thread inside the host's network namespace.
func (h *Host) Do(fn func() error) error { return h.NetNS.Do(fn) }

// DialContext opens a connection from inside the host's network namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return h.launcher.dial(ctx, network, addr)
}

// RouteVia adds a route for cidr through another host (the "user-supplied
// networking" of a policy-only install: a static route per podCIDR).
func (h *Host) RouteVia(cidr string, via net.IP) error { return routeVia(h.NetNS, cidr, via) }

// RouteVia adds a route in the control plane's namespace (the cluster
// network's router) for cidr through a host.
func (cp *ControlPlane) RouteVia(cidr string, via net.IP) error { return routeVia(cp.Node, cidr, via) }

// routeVia routes cidr through via inside ns.
func routeVia(ns *NetNS, cidr string, via net.IP) error {
	_, dst, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	return ns.Do(func() error { return netlink.RouteReplace(&netlink.Route{Dst: dst, Gw: via}) })
}

// Close ends the host's namespaces and removes its files. Processes must
// have been stopped.
func (h *Host) Close() {
	if h.launcher != nil {
		h.launcher.stop()
	}
	if h.mountNS != "" {
		_ = syscall.Unmount(h.mountNS, syscall.MNT_DETACH)
		_ = syscall.Unmount(filepath.Dir(h.mountNS), syscall.MNT_DETACH)
	}
	if h.NetNS != nil {
		_ = h.NetNS.Close()
	}
	_ = os.RemoveAll(h.Dir)
}

// mountPoint makes sure path exists to bind a Host's directory on; what it
// creates (empty directories) is removed by Stop, after every Host is gone,
// or by the next run's sweep if this one is killed (a list in the temp dir).
func (cp *ControlPlane) mountPoint(path string) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var missing []string
	for p := path; p != "/"; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return nil
	}
	cp.createdPaths = append(cp.createdPaths, missing...) // deepest first
	list := strings.Join(cp.createdPaths, "\n") + "\n"
	if err := os.WriteFile(mountPointsFile(), []byte(list), 0o644); err != nil {
		return err
	}
	return os.MkdirAll(path, 0o755)
}

const mountPointsSuffix = "-mountpoints"

func mountPointsFile() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("%s%d%s", nsPrefix, os.Getpid(), mountPointsSuffix))
}

// removeMountPoints removes the empty directories mountPoint created.
func (cp *ControlPlane) removeMountPoints() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.createdPaths) > 0 {
		removeListedMountPoints(mountPointsFile())
	}
	cp.createdPaths = nil
}

// removeListedMountPoints removes the directories a list names (deepest
// first; only empty ones), then the list.
func removeListedMountPoints(list string) {
	b, _ := os.ReadFile(list)
	for _, p := range strings.Fields(string(b)) {
		_ = os.Remove(p)
	}
	_ = os.Remove(list)
}
