package integration

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

func (e *env) statusOrGC(cmd string, body map[string]any) cniResult {
	var c map[string]any
	_ = json.Unmarshal(e.conf(), &c)
	for k, v := range body {
		c[k] = v
	}
	b, _ := json.Marshal(c)
	return cluster.RunCNI(t0ctx(), cniCall(e, &pod{}, cmd, b, ""))
}

func TestStatus(t *testing.T) {
	ready := newEnv(t, podCIDRs("v4")...)
	if r := ready.statusOrGC("STATUS", nil); r.Err != nil || len(r.Stdout) != 0 {
		t.Errorf("STATUS on a ready node: %v %s", r.Err, r.Stdout)
	}
	noCIDR := newEnv(t)
	v4only := newEnv(t, podCIDRs("v4")...)
	delete(v4only.ipam, "subnet")
	v4only.ipam["ranges"] = rangesFor("dual")
	down := newEnv(t, podCIDRs("v4")...)
	down.extra["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
	for name, tc := range map[string]struct {
		e    *env
		want string
	}{
		"node without podCIDR": {noCIDR, "has no podCIDR"},
		"no IPv6 podCIDR":      {v4only, "no IPv6 podCIDR"},
		"API unreachable":      {down, "127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			r := tc.e.statusOrGC("STATUS", nil)
			ce := cniErr(t, r)
			if ce.Code != types.ErrPluginNotAvailable || !strings.Contains(ce.Msg, tc.want) {
				t.Errorf("STATUS error %d %q, want code 50 mentioning %q", ce.Code, ce.Msg, tc.want)
			}
		})
	}
}

// Leases and links of attachments whose DEL never came are reclaimed by GC;
// valid attachments and links kdd-cni did not create are left alone.
func TestGCReclaimsLeaks(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	pods := map[string]*pod{}
	for _, n := range []string{"keep1", "keep2", "leak1", "leak2"} {
		pods[n] = e.newPod(n, false)
		e.add(pods[n])
	}
	// A cali link of someone else's (no kdd-cni alias) must survive.
	inNode(t, func() error {
		la := netlink.NewLinkAttrs()
		la.Name = "calif0reign000"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "foreignpeer0"})
	})
	t.Cleanup(func() {
		_ = cluster.DoInNode(func() error {
			l, err := netlink.LinkByName("calif0reign000")
			if err == nil {
				err = netlink.LinkDel(l)
			}
			return err
		})
	})
	if n := len(e.leases()); n != 8 {
		t.Fatalf("leases before GC: %d", n)
	}

	// Without cni.dev/valid-attachments nothing is known to be stale.
	if r := e.statusOrGC("GC", nil); r.Err != nil {
		t.Fatalf("GC without list: %v", r.Err)
	}
	if n := len(e.leases()); n != 8 {
		t.Fatalf("GC without a list released leases: %d left", n)
	}

	valid := []types.GCAttachment{
		{ContainerID: pods["keep1"].ContainerID, IfName: "eth0"},
		{ContainerID: pods["keep2"].ContainerID, IfName: "eth0"},
		{ContainerID: "some-other-container", IfName: "eth0"},
	}
	if r := e.statusOrGC("GC", map[string]any{"cni.dev/valid-attachments": valid}); r.Err != nil {
		t.Fatalf("GC: %v", r.Err)
	}
	owners := map[string]int{}
	for _, o := range e.leases() {
		owners[o]++
	}
	for _, n := range []string{"keep1", "keep2"} {
		p := pods[n]
		if owners[p.ContainerID] != 2 {
			t.Errorf("valid attachment %s lost leases: %v", n, owners)
		}
		if !linkExists(t, p.HostVeth) {
			t.Errorf("valid attachment %s lost its host veth", n)
		}
		if r := e.check(p); r.Err != nil {
			t.Errorf("valid attachment %s broken by GC: %v", n, r.Err)
		}
	}
	for _, n := range []string{"leak1", "leak2"} {
		e.assertGone(pods[n], pods[n].IPs())
	}
	if len(owners) != 2 {
		t.Errorf("leases after GC: %v", owners)
	}
	if !linkExists(t, "calif0reign000") {
		t.Error("GC removed a link kdd-cni did not create")
	}
	e.del(pods["keep1"])
	e.del(pods["keep2"])
}

// TestGCOnlyItsOwnNetwork: two networks use the calico plugin on one node;
// GC for one never touches the other's host veths or leases.
func TestGCOnlyItsOwnNetwork(t *testing.T) {
	a := newEnv(t, podCIDRs("v4")...)
	b := newEnv(t, podCIDRs("v4")...)
	b.extra["name"] = "other-net"
	pa, pb := a.newPod("on-a", false), b.newPod("on-b", false)
	a.add(pa)
	b.add(pb)
	if r := a.statusOrGC("GC", map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{}}); r.Err != nil {
		t.Fatalf("GC: %v", r.Err)
	}
	a.assertGone(pa, pa.IPs())
	if !linkExists(t, pb.HostVeth) {
		t.Fatal("GC of one network removed another network's host veth")
	}
	if l := harness.HostLocalLeases(b.dataDir, "other-net"); len(l) != 1 {
		t.Errorf("other network's leases after GC: %v", l)
	}
	if r := b.check(pb); r.Err != nil {
		t.Errorf("other network's pod broken by GC: %v", r.Err)
	}
	b.del(pb)
	b.assertGone(pb, pb.IPs())
}

// TestTornLeaseRemoved: a host-local killed between creating a lease file
// and writing its owner (it dies with a killed ADD) leaves an empty file no
// DEL can release; the DEL of the sandbox whose ADD was killed (or GC)
// removes it, and only it.
func TestTornLeaseRemoved(t *testing.T) {
	e := newEnv(t, "10.200.250.0/24")
	live := e.newPod("live", false)
	e.add(live)
	gone := e.newPod("gone", false)
	e.add(gone)
	torn := filepath.Join(e.dataDir, networkName, "10.200.250.200")
	if err := os.WriteFile(torn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The mark a killed ADD leaves (nodestate.Marks).
	if err := os.WriteFile(filepath.Join(e.dataDir, "state", "adding", gone.ContainerID), []byte(e.ns+"/gone"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.del(gone)
	if _, err := os.Stat(torn); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("torn lease file still there after DEL: %v", err)
	}
	owners := e.leases()
	if len(owners) != 1 || owners[live.IPs()[0].String()] != live.ContainerID {
		t.Errorf("leases after DEL: %v", owners)
	}
	e.del(live)
}
