package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// podCIDRs returns a fresh podCIDR pair for a test (10.200.0.0/24 on,
// into 10.201... past 256 of them).
func podCIDRs(families string) []string {
	n := int(seq.Add(1))
	v4 := fmt.Sprintf("10.%d.%d.0/24", 200+n/256, n%256)
	v6 := fmt.Sprintf("fd00:200:%x::/64", n)
	switch families {
	case "v4":
		return []string{v4}
	case "v6":
		return []string{v6}
	}
	return []string{v4, v6}
}

func rangesFor(families string) []any {
	switch families {
	case "v4":
		return []any{[]any{map[string]any{"subnet": "usePodCidr"}}}
	case "v6":
		return []any{[]any{map[string]any{"subnet": "usePodCidrIPv6"}}}
	}
	return []any{[]any{map[string]any{"subnet": "usePodCidr"}}, []any{map[string]any{"subnet": "usePodCidrIPv6"}}}
}

// TestLifecyclePerSpecVersion: ADD two pods → kernel state, annotations and
// result → ping between them through the host → CHECK → DEL → nothing left.
func TestLifecyclePerSpecVersion(t *testing.T) {
	for _, ver := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			cidrs := podCIDRs("dual")
			e := newEnv(t, cidrs...)
			e.version = ver
			delete(e.ipam, "subnet")
			e.ipam["ranges"] = rangesFor("dual")
			a, b := e.newPod("pod-a", false), e.newPod("pod-b", false)
			e.add(a)
			e.add(b)
			assertPodNetwork(t, e, a, cidrs, 1500)
			assertResult(t, e, a, ver)
			for _, ip := range b.IPs() {
				if err := a.Netns.Ping(ip, 5*time.Second); err != nil {
					t.Errorf("ping %s from pod-a: %v", ip, err)
				}
			}
			if ver != "0.3.0" && ver != "0.3.1" {
				if r := e.check(a); r.Err != nil || len(r.Stdout) != 0 {
					t.Errorf("CHECK: %v, stdout %q (must be empty)", r.Err, r.Stdout)
				}
			}
			ipsA := a.IPs()
			e.del(b)
			// The ping check can fail: pod-b is gone now.
			if err := a.Netns.Ping(b.IPs()[0], 500*time.Millisecond); err == nil {
				t.Errorf("ping %s succeeded after pod-b's DEL", b.IPs()[0])
			}
			e.del(a)
			e.assertGone(a, ipsA)
			e.assertGone(b, b.IPs())
			ann := e.annotations("pod-a")
			if ann["cni.projectcalico.org/podIP"] != "" || ann["cni.projectcalico.org/podIPs"] != "" ||
				ann["cni.projectcalico.org/containerID"] != a.ContainerID {
				t.Errorf("annotations after DEL: %v", ann)
			}
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
}

// assertPodNetwork checks what the kernel and the API server hold for a pod.
func assertPodNetwork(t *testing.T, e *env, p *pod, cidrs []string, mtu int) {
	t.Helper()
	ips := p.IPs()
	if len(ips) != len(cidrs) {
		t.Fatalf("got IPs %v for podCIDRs %v", ips, cidrs)
	}
	var want []string
	for i, ip := range ips {
		_, n, _ := net.ParseCIDR(cidrs[i])
		if !n.Contains(ip) {
			t.Errorf("IP %s not in podCIDR %s", ip, n)
		}
		bits := 32
		if ip.To4() == nil {
			bits = 128
		}
		want = append(want, fmt.Sprintf("%s/%d", ip, bits))
	}
	// API server: the WorkloadEndpoint annotations.
	ann := e.annotations(p.Name)
	if got := ann["cni.projectcalico.org/podIPs"]; got != strings.Join(want, ",") {
		t.Errorf("podIPs annotation %q, want %q", got, strings.Join(want, ","))
	}
	if got := ann["cni.projectcalico.org/podIP"]; got != want[0] {
		t.Errorf("podIP annotation %q, want %q", got, want[0])
	}
	if got := ann["cni.projectcalico.org/containerID"]; got != p.ContainerID {
		t.Errorf("containerID annotation %q, want %q", got, p.ContainerID)
	}
	// Host side.
	var hostIndex int
	var hostLL []string // the host veth's link-local addresses: the pod's IPv6 next hop
	inNode(t, func() error {
		l, err := netlink.LinkByName(p.HostVeth)
		if err != nil {
			return fmt.Errorf("host veth %s: %w", p.HostVeth, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				hostLL = append(hostLL, a.IP.String())
			}
		}
		a := l.Attrs()
		hostIndex = a.Index
		if l.Type() != "veth" || a.HardwareAddr.String() != "ee:ee:ee:ee:ee:ee" || a.Flags&net.FlagUp == 0 || a.MTU != mtu {
			return fmt.Errorf("host veth %s: type %s mac %s flags %v mtu %d", p.HostVeth, l.Type(), a.HardwareAddr, a.Flags, a.MTU)
		}
		return nil
	})
	for i, ip := range ips {
		routes := hostRoutesTo(t, ip)
		if len(routes) != 1 || routes[0].LinkIndex != hostIndex || routes[0].Dst.String() != want[i] {
			t.Errorf("host routes to %s: %v, want one %s dev %s", ip, routes, want[i], p.HostVeth)
		} else if ip.To4() != nil && routes[0].Scope != netlink.SCOPE_LINK {
			t.Errorf("host route to %s has scope %v, want link", ip, routes[0].Scope)
		}
	}
	hasV4, hasV6 := ips[0].To4() != nil, ips[len(ips)-1].To4() == nil
	sysctls := map[string]string{"net/ipv6/conf/" + p.HostVeth + "/accept_ra": "0"}
	if hasV4 {
		for k, v := range map[string]string{"proxy_arp": "1", "forwarding": "1", "route_localnet": "1"} {
			sysctls["net/ipv4/conf/"+p.HostVeth+"/"+k] = v
		}
		sysctls["net/ipv4/neigh/"+p.HostVeth+"/proxy_delay"] = "0"
	}
	if hasV6 {
		for k, v := range map[string]string{"proxy_ndp": "1", "forwarding": "1", "accept_dad": "0", "disable_ipv6": "0"} {
			sysctls["net/ipv6/conf/"+p.HostVeth+"/"+k] = v
		}
	}
	for k, v := range sysctls {
		if got := readSysctl(t, nil, k); got != v {
			t.Errorf("host sysctl %s = %s, want %s", k, got, v)
		}
	}
	// The result's container interface carries the MTU (a field of results
	// from spec 1.0.0's types on; older versions have none).
	if !strings.HasPrefix(e.version, "0.") {
		for _, i := range p.Result.Interfaces {
			if i.Name == "eth0" && i.Mtu != mtu {
				t.Errorf("result's eth0 reports mtu %d, want %d", i.Mtu, mtu)
			}
		}
	}
	// Container side.
	if err := p.Netns.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != mtu || l.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("eth0 mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var got []string
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				got = append(got, a.IPNet.String())
				if a.Flags&0x40 != 0 { // IFA_F_TENTATIVE
					return fmt.Errorf("address %s is tentative (DAD not disabled)", a.IPNet)
				}
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("eth0 addresses %v, want %v", got, want)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var rs []string
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() && r.Dst.IP.To4() == nil {
				continue // fe80::/64, kernel-made
			}
			dst := "default"
			if r.Dst != nil && r.Dst.String() != "0.0.0.0/0" && r.Dst.String() != "::/0" {
				dst = r.Dst.String()
			}
			if slices.Contains(want, dst) {
				continue // the kernel's prefix route for the pod's own /128
			}
			rs = append(rs, fmt.Sprintf("%s via %v", dst, r.Gw))
		}
		var wantRoutes []string
		if hasV4 {
			wantRoutes = append(wantRoutes, "default via 169.254.1.1", "169.254.1.1/32 via <nil>")
		}
		if hasV6 {
			if len(hostLL) != 1 {
				return fmt.Errorf("host veth %s has link-local addresses %v, want one", p.HostVeth, hostLL)
			}
			wantRoutes = append(wantRoutes, "default via "+hostLL[0])
		}
		for _, w := range wantRoutes {
			if !strings.Contains(strings.Join(rs, ";"), w) {
				return fmt.Errorf("container routes %v lack %q", rs, w)
			}
		}
		if len(rs) != len(wantRoutes) {
			return fmt.Errorf("container routes %v, want exactly %v", rs, wantRoutes)
		}
		return nil
	}); err != nil {
		t.Errorf("container side: %v", err)
	}
	if hasV4 {
		if v := readSysctl(t, p.Netns, "net/ipv4/ip_forward"); v != "0" {
			t.Errorf("container ip_forward = %s, want 0", v)
		}
	}
	// Leases: one per IP, owned by this container and interface.
	l := e.leases()
	for _, ip := range ips {
		if l[ip.String()] != p.ContainerID {
			t.Errorf("lease for %s: %q", ip, l[ip.String()])
		}
	}
}

func assertResult(t *testing.T, e *env, p *pod, ver string) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, p.Raw); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	if !strings.Contains(s, `"cniVersion":"`+ver+`"`) {
		t.Errorf("result version: %s", s)
	}
	if strings.Contains(s, "gateway") {
		t.Errorf("result has a gateway: %s", s)
	}
	r := p.Result
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != p.HostVeth || r.Interfaces[1].Name != "eth0" ||
		r.Interfaces[1].Sandbox != p.Netns.Path || r.Interfaces[1].Mac == "" {
		t.Errorf("result interfaces: %s", s)
	}
	for _, ipc := range r.IPs {
		if ipc.Interface == nil || *ipc.Interface != 1 {
			t.Errorf("IP %s not on interface 1: %s", ipc.Address.String(), s)
		}
	}
	var mac string
	_ = p.Netns.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return err
	})
	if r.Interfaces[1].Mac != mac {
		t.Errorf("result MAC %s, kernel %s", r.Interfaces[1].Mac, mac)
	}
}

var _ = harness.RequireRoot

// TestIPv6GatewayUnderAddrGenMode: whatever the node's addr_gen_mode (0
// EUI-64, 1 none, 2 stable privacy, 3 random), a dual-stack pod's IPv6
// default route goes via the host veth's actual link-local address (checked
// by assertPodNetwork), pods reach each other over IPv6 through it, and
// CHECK passes.
func TestIPv6GatewayUnderAddrGenMode(t *testing.T) {
	key := "net/ipv6/conf/default/addr_gen_mode"
	was := readSysctl(t, nil, key)
	t.Cleanup(func() { writeNodeSysctl(t, key, was) })
	for _, mode := range []string{"0", "1", "3", "2"} {
		t.Run("addr_gen_mode="+mode, func(t *testing.T) {
			if mode == "2" {
				// Stable privacy derives addresses from a secret the node
				// must have; once set, the kernel uses it in every mode,
				// so this mode runs last.
				writeNodeSysctl(t, "net/ipv6/conf/default/stable_secret", "fd00:5ec:7e7::1")
			}
			writeNodeSysctl(t, key, mode)
			cidrs := podCIDRs("dual")
			e := newEnv(t, cidrs...)
			delete(e.ipam, "subnet")
			e.ipam["ranges"] = rangesFor("dual")
			a, b := e.newPod("pod-a", false), e.newPod("pod-b", false)
			e.add(a)
			e.add(b)
			assertPodNetwork(t, e, a, cidrs, 1500)
			if err := a.Netns.Ping(b.IPs()[1], 5*time.Second); err != nil {
				t.Errorf("ping %s from pod-a: %v", b.IPs()[1], err)
			}
			if r := e.check(a); r.Err != nil {
				t.Errorf("CHECK: %v: %s", r.Err, r.Stdout)
			}
			e.del(a)
			e.del(b)
		})
	}
}

// writeNodeSysctl sets a sysctl in the node's network namespace.
func writeNodeSysctl(t *testing.T, key, value string) {
	t.Helper()
	inNode(t, func() error { return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644) })
}
