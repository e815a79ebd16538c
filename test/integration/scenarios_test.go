package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// IPv4-only, IPv6-only and dual-stack podCIDRs, old-style subnet and ranges.
func TestFamilies(t *testing.T) {
	for _, tc := range []struct {
		name, families string
		oldStyle       bool
	}{{"v4 subnet", "v4", true}, {"v4 ranges", "v4", false}, {"v6", "v6", false}, {"dual", "dual", false}} {
		t.Run(tc.name, func(t *testing.T) {
			cidrs := podCIDRs(tc.families)
			e := newEnv(t, cidrs...)
			if !tc.oldStyle {
				delete(e.ipam, "subnet")
				e.ipam["ranges"] = rangesFor(tc.families)
			}
			a, b := e.newPod("a", false), e.newPod("b", false)
			e.add(a)
			e.add(b)
			assertPodNetwork(t, e, a, cidrs, 1500)
			for _, ip := range b.IPs() {
				if err := a.Netns.Ping(ip, 5*time.Second); err != nil {
					t.Errorf("ping %s: %v", ip, err)
				}
			}
			if r := e.check(a); r.Err != nil {
				t.Errorf("CHECK: %v", r.Err)
			}
			e.del(a)
			e.del(b)
			e.assertGone(a, a.IPs())
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
}

// usePodCidr next to a static range: the pod gets an address from each, and
// DEL releases both. With Calico's 0.0.0.0/0 placeholder the real host-local
// refuses the DEL ("range set 0 overlaps with 1") and the IPs leak.
func TestUsePodCidrWithStaticRange(t *testing.T) {
	cidrs := podCIDRs("v4")
	e := newEnv(t, cidrs...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = []any{
		[]any{map[string]any{"subnet": "usePodCidr"}},
		[]any{map[string]any{"subnet": "192.168.77.0/24"}},
	}
	a := e.newPod("a", false)
	e.add(a)
	if len(a.IPs()) != 2 || !strings.HasPrefix(a.IPs()[1].String(), "192.168.77.") {
		t.Fatalf("IPs %v", a.IPs())
	}
	if len(e.leases()) != 2 {
		t.Fatalf("leases %v", e.leases())
	}

	// What Calico sends host-local on DEL: rejected, nothing released.
	calicoDel := e.conf()
	calicoDel = []byte(strings.Replace(string(calicoDel), `"subnet":"usePodCidr"`, `"subnet":"0.0.0.0/0"`, 1))
	r := cluster.RunCNI(context.Background(), harness.CNICall{
		Binary: filepath.Join(binDir, "host-local"), Command: "DEL", ContainerID: a.ContainerID,
		Netns: a.Netns.Path, IfName: "eth0", Path: binDir, Config: calicoDel,
	})
	if r.Err == nil || !strings.Contains(string(r.Stdout), "overlaps") {
		t.Errorf("host-local accepted Calico's placeholder: %v %s", r.Err, r.Stdout)
	}
	if len(e.leases()) != 2 {
		t.Fatalf("leases after refused DEL %v", e.leases())
	}

	e.del(a)
	if l := e.leases(); len(l) != 0 {
		t.Errorf("DEL leaked leases: %v", l)
	}
	e.assertGone(a, a.IPs())
}

// ipam.routes replace the default routes; include_default_routes adds them back.
func TestCustomRoutes(t *testing.T) {
	for _, withDefaults := range []bool{false, true} {
		t.Run(map[bool]string{false: "custom", true: "custom+default"}[withDefaults], func(t *testing.T) {
			e := newEnv(t, podCIDRs("v4")...)
			e.ipam["routes"] = []any{map[string]any{"dst": "10.96.0.0/12", "gw": "1.2.3.4"}}
			if withDefaults {
				e.extra["include_default_routes"] = true
			}
			a := e.newPod("a", false)
			e.add(a)
			want := map[string]bool{"10.96.0.0/12": true, "169.254.1.1/32": true}
			if withDefaults {
				want["0.0.0.0/0"] = true
			}
			if err := a.Netns.Do(func() error {
				routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				got := map[string]bool{}
				for _, r := range routes {
					got[r.Dst.String()] = true
					if r.Dst.String() == "10.96.0.0/12" && !r.Gw.Equal(net.IPv4(169, 254, 1, 1)) {
						t.Errorf("custom route via %s, want 169.254.1.1 (the ipam gw is ignored)", r.Gw)
					}
				}
				if len(got) != len(want) {
					t.Errorf("routes %v, want %v", got, want)
				}
				for d := range want {
					if !got[d] {
						t.Errorf("route %s missing (have %v)", d, got)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if r := e.check(a); r.Err != nil {
				t.Errorf("CHECK: %v", r.Err)
			}
			e.del(a)
		})
	}
}

// MTU from the configuration, and from the MTU file when mtu is 0.
func TestMTU(t *testing.T) {
	t.Run("config", func(t *testing.T) {
		cidrs := podCIDRs("v4")
		e := newEnv(t, cidrs...)
		e.extra["mtu"] = 1400
		e.extra["num_queues"] = 2
		a := e.newPod("a", false)
		e.add(a)
		assertPodNetwork(t, e, a, cidrs, 1400)
		inNode(t, func() error {
			l, err := netlink.LinkByName(a.HostVeth)
			if err == nil && (l.Attrs().NumTxQueues != 2 || l.Attrs().NumRxQueues != 2) {
				t.Errorf("host veth queues tx %d rx %d, want 2", l.Attrs().NumTxQueues, l.Attrs().NumRxQueues)
			}
			return err
		})
		e.del(a)
	})
	t.Run("file", func(t *testing.T) {
		cidrs := podCIDRs("v4")
		e := newEnv(t, cidrs...)
		f := filepath.Join(t.TempDir(), "mtu")
		if err := os.WriteFile(f, []byte("1300\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.extra["mtu"] = 0
		e.extra["mtu_file"] = f
		a := e.newPod("a", false)
		e.add(a)
		assertPodNetwork(t, e, a, cidrs, 1300)
		e.del(a)
	})
	// require_mtu_file holds pods back until calico-node has written the
	// file, even with `mtu` configured (which still sets the value).
	t.Run("required file", func(t *testing.T) {
		cidrs := podCIDRs("v4")
		e := newEnv(t, cidrs...)
		f := filepath.Join(t.TempDir(), "mtu")
		e.extra["mtu"] = 1400
		e.extra["mtu_file"] = f
		e.extra["require_mtu_file"] = true
		a := e.newPod("a", false)
		r := e.call("ADD", a, e.conf())
		if ce := cniErr(t, r); !strings.Contains(ce.Msg, "MTU file "+f) {
			t.Errorf("error %q", ce.Msg)
		}
		e.assertNothingAllocated(a, true)
		if err := os.WriteFile(f, []byte("1300\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e.add(a)
		assertPodNetwork(t, e, a, cidrs, 1400)
		e.del(a)
	})
}

// A host veth left with the pod's name (e.g. by a crashed sandbox) is replaced.
func TestStaleHostVeth(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	a := e.newPod("a", false)
	inNode(t, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = a.HostVeth
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "stalepeer0"})
	})
	e.add(a)
	if linkExists(t, "stalepeer0") {
		t.Error("stale veth pair not removed")
	}
	if r := e.check(a); r.Err != nil {
		t.Errorf("CHECK: %v", r.Err)
	}
	e.del(a)
	e.assertGone(a, a.IPs())
}

// A second sandbox of the same pod takes over; the first one's (stale) DEL
// releases its own lease but leaves the new annotations alone.
func TestNewSandboxThenStaleDel(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	first := e.newPod("web", false)
	e.add(first)
	second := e.sandbox("web")
	e.add(second)
	if first.IPs()[0].Equal(second.IPs()[0]) {
		t.Fatalf("second sandbox reused %s", first.IPs()[0])
	}
	ann := e.annotations("web")
	if ann["cni.projectcalico.org/containerID"] != second.ContainerID {
		t.Fatalf("annotations not taken over: %v", ann)
	}
	e.del(first) // stale
	ann = e.annotations("web")
	want := second.IPs()[0].String() + "/32"
	if ann["cni.projectcalico.org/containerID"] != second.ContainerID || ann["cni.projectcalico.org/podIP"] != want {
		t.Errorf("stale DEL changed the live sandbox's annotations: %v", ann)
	}
	for ip, owner := range e.leases() {
		if owner == first.ContainerID {
			t.Errorf("stale sandbox's lease %s kept", ip)
		}
	}
	if r := e.check(second); r.Err != nil {
		t.Errorf("live sandbox broken by stale DEL: %v", r.Err)
	}
	e.del(second)
	if a := e.annotations("web"); a["cni.projectcalico.org/podIP"] != "" {
		t.Errorf("annotations after the live sandbox's DEL: %v", a)
	}
	e.assertGone(second, second.IPs())
}

// Addresses whose annotations name no sandbox (an older plugin wrote them
// without one) are blanked by DEL, as Calico's DEL does, so Felix stops
// treating them as the pod's; a Pod with nothing to clear is not written.
// (Another sandbox's annotations are left alone: TestNewSandboxThenStaleDel.)
func TestDelClearsUnownedAnnotations(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	a := e.newPod("legacy", false)
	e.add(a)
	unowned := []byte(`{"metadata":{"annotations":{"cni.projectcalico.org/containerID":null}}}`)
	if _, err := cluster.Admin.CoreV1().Pods(e.ns).Patch(context.Background(), "legacy", types.MergePatchType, unowned, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if ann := e.annotations("legacy"); ann["cni.projectcalico.org/podIP"] == "" {
		t.Fatalf("no address to clear: %v", ann)
	}
	e.del(a)
	ann := e.annotations("legacy")
	if ann["cni.projectcalico.org/podIP"] != "" || ann["cni.projectcalico.org/podIPs"] != "" {
		t.Errorf("unowned addresses left after DEL: %v", ann)
	}
	if id, ok := ann["cni.projectcalico.org/containerID"]; ok {
		t.Errorf("DEL wrote containerID %q", id)
	}
	e.assertGone(a, a.IPs())

	fresh := e.newPod("never-added", false)
	before, err := cluster.Admin.CoreV1().Pods(e.ns).Get(context.Background(), "never-added", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.del(fresh)
	after, err := cluster.Admin.CoreV1().Pods(e.ns).Get(context.Background(), "never-added", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("DEL of a pod with nothing to clear wrote it: %v", after.Annotations)
	}
}

// DEL succeeds however much is already gone.
func TestDelIdempotent(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	t.Run("twice", func(t *testing.T) {
		a := e.newPod("twice", false)
		e.add(a)
		e.del(a)
		e.del(a)
		e.assertGone(a, a.IPs())
	})
	t.Run("netns gone", func(t *testing.T) {
		a := e.newPod("nsgone", false)
		e.add(a)
		if err := a.Netns.Close(); err != nil {
			t.Fatal(err)
		}
		e.del(a)
		e.assertGone(a, a.IPs())
	})
	// The runtime unmounted the namespace but left its (now regular) file.
	t.Run("netns path not a netns", func(t *testing.T) {
		a := e.newPod("nsfile", false)
		e.add(a)
		if err := a.Netns.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(a.Netns.Path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(a.Netns.Path) })
		e.del(a)
		e.assertGone(a, a.IPs())
	})
	t.Run("pod gone", func(t *testing.T) {
		a := e.newPod("podgone", false)
		e.add(a)
		if err := cluster.Admin.CoreV1().Pods(e.ns).Delete(context.Background(), "podgone", deleteNow()); err != nil {
			t.Fatal(err)
		}
		e.del(a)
		e.assertGone(a, a.IPs())
	})
	t.Run("never added", func(t *testing.T) {
		e.del(e.newPod("never", false))
		e.del(e.newPod("neverobj", true))
	})
	t.Run("no pod args", func(t *testing.T) {
		a := e.newPod("noargs", false)
		e.add(a)
		r := cluster.RunCNI(context.Background(), cniCall(e, a, "DEL", e.conf(), ""))
		if r.Err != nil {
			t.Fatalf("DEL without pod args: %v", r.Err)
		}
		e.assertGone(a, a.IPs())
	})
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}
