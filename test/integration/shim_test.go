package integration

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// The podcidr shim as the IPAM of the real ptp plugin, dual stack: node and
// datastore settings come from the ipam section, addresses from the node's
// podCIDRs, and every command reaches host-local.
func TestPodCIDRShimUnderPTP(t *testing.T) {
	cidrs := podCIDRs("dual")
	e := newEnv(t, cidrs...)
	conf := func() []byte {
		b, _ := json.Marshal(map[string]any{
			"cniVersion": "1.1.0", "name": networkName, "type": "ptp", "ipMasq": false, "mtu": 1400,
			"ipam": map[string]any{
				"type": "podcidr", "nodename": e.node, "datastore_type": "kubernetes",
				"kubernetes": map[string]any{"kubeconfig": kubeconfig}, "state_dir": e.stateDir(),
				"ranges": rangesFor("dual"), "dataDir": e.dataDir,
			},
		})
		return b
	}
	run := func(cmd string, p *pod, c []byte) cniResult {
		call := cniCall(e, p, cmd, c, "K8S_POD_NAMESPACE="+e.ns+";K8S_POD_NAME="+p.Name)
		call.Binary = filepath.Join(binDir, "ptp")
		return cluster.RunCNI(context.Background(), call)
	}
	pods := []*pod{e.newPod("a", false), e.newPod("b", false)}
	for _, p := range pods {
		r := run("ADD", p, conf())
		if r.Err != nil {
			t.Fatalf("ptp ADD: %v", r.Err)
		}
		if err := p.SetResult(conf(), r.Stdout); err != nil {
			t.Fatal(err)
		}
		if len(p.Result.IPs) != 2 {
			t.Fatalf("IPs %v", p.Result.IPs)
		}
		for i, ipc := range p.Result.IPs {
			_, n, _ := net.ParseCIDR(cidrs[i])
			if !n.Contains(ipc.Address.IP) {
				t.Errorf("%s not in podCIDR %s", ipc.Address.IP, n)
			}
		}
		if err := p.Netns.Do(func() error {
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			found := 0
			for _, a := range addrs {
				for _, ipc := range p.Result.IPs {
					if a.IP.Equal(ipc.Address.IP) {
						found++
					}
				}
			}
			if found != 2 {
				t.Errorf("pod addresses %v, result %v", addrs, p.Result.IPs)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ip := range pods[1].IPs() {
		if err := pods[0].Netns.Ping(ip, 5*time.Second); err != nil {
			t.Errorf("ptp pods: ping %s: %v", ip, err)
		}
	}
	var c map[string]any
	_ = json.Unmarshal(conf(), &c)
	var prev map[string]any
	_ = json.Unmarshal(pods[0].Raw, &prev)
	c["prevResult"] = prev
	withPrev, _ := json.Marshal(c)
	if r := run("CHECK", pods[0], withPrev); r.Err != nil {
		t.Errorf("ptp CHECK: %v", r.Err)
	}
	// The shim alone: STATUS ready; GC with pod a valid releases pod b.
	shim := func(cmd string, extra map[string]any) cniResult {
		var m map[string]any
		_ = json.Unmarshal(conf(), &m)
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		call := harness.CNICall{Binary: filepath.Join(binDir, "podcidr"), Command: cmd, Path: binDir, Config: b}
		return cluster.RunCNI(context.Background(), call)
	}
	if r := shim("STATUS", nil); r.Err != nil {
		t.Errorf("podcidr STATUS: %v", r.Err)
	}
	// The calico plugin's GC rules hold for the shim: within the grace
	// period (a first pass only marks) and for the runtime's sandboxes,
	// nothing is released.
	none := []map[string]string{}
	if r := shim("GC", map[string]any{"cni.dev/valid-attachments": none, "kdd-cni.dev/gc-grace-seconds": 600}); r.Err != nil {
		t.Errorf("podcidr GC with a grace period: %v", r.Err)
	}
	if r := shim("GC", map[string]any{"cni.dev/valid-attachments": none, "kdd-cni.dev/gc-grace-seconds": 600,
		"kdd-cni.dev/valid-sandboxes": []string{pods[0].ContainerID, pods[1].ContainerID}}); r.Err != nil {
		t.Errorf("podcidr GC with valid sandboxes: %v", r.Err)
	}
	if n := len(e.leases()); n != 4 {
		t.Fatalf("podcidr GC released leases within the grace period or of valid sandboxes: %d of 4 left", n)
	}
	if r := shim("GC", map[string]any{"cni.dev/valid-attachments": []map[string]string{{"containerID": pods[0].ContainerID, "ifname": "eth0"}}}); r.Err != nil {
		t.Errorf("podcidr GC: %v", r.Err)
	}
	for _, owner := range e.leases() {
		if owner != pods[0].ContainerID {
			t.Errorf("lease of %q survived GC", owner)
		}
	}
	for _, p := range pods {
		if r := run("DEL", p, conf()); r.Err != nil {
			t.Errorf("ptp DEL: %v", r.Err)
		}
	}
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases after DEL: %v", l)
	}
}

// With install-cni's sidecar publishing the node's podCIDRs (a live watch
// lock), the shim makes no API request; the addresses come from them.
func TestPodCIDRShimWithWatchedPodCIDRs(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	ctx := context.Background()
	_, _, cidrs := e.publishPodCIDRs()
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": networkName, "type": "ptp", "ipMasq": false, "mtu": 1400,
		"ipam": map[string]any{
			"type": "podcidr", "nodename": e.node, "datastore_type": "kubernetes", "state_dir": e.stateDir(),
			"kubernetes": map[string]any{"kubeconfig": kubeconfig},
			"subnet":     "usePodCidr", "dataDir": e.dataDir,
		},
	})
	p := e.newPod("a", false)
	run := func(cmd string) cniResult {
		call := cniCall(e, p, cmd, conf, "K8S_POD_NAMESPACE="+e.ns+";K8S_POD_NAME="+p.Name)
		call.Binary = filepath.Join(binDir, "ptp")
		return cluster.RunCNI(ctx, call)
	}
	var r cniResult
	if got := requestsOf(t, func() { r = run("ADD") }); got != "" {
		t.Errorf("shim ADD with a live watched copy made %s, want no request", got)
	}
	if r.Err != nil {
		t.Fatalf("ptp ADD: %v", r.Err)
	}
	res, err := version.NewResult("1.1.0", r.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := types100.NewResultFromResult(res)
	_, n, _ := net.ParseCIDR(cidrs.V4)
	if len(got.IPs) != 1 || !n.Contains(got.IPs[0].Address.IP) {
		t.Errorf("IPs %v, want one in %s", got.IPs, n)
	}
	if r := run("DEL"); r.Err != nil {
		t.Errorf("ptp DEL: %v", r.Err)
	}
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases after DEL: %v", l)
	}
}
