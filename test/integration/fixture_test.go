package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

const networkName = "k8s-pod-network"

var seq atomic.Int64

// env is one test's world: a Node with podCIDRs, a namespace, a host-local
// data dir and the plugin configuration.
type env struct {
	t       *testing.T
	node    string
	ns      string
	dataDir string
	logFile string
	// conf fields
	version string
	ipam    map[string]any
	extra   map[string]any
}

func newEnv(t *testing.T, podCIDRs ...string) *env {
	t.Helper()
	requireCluster(t)
	n := seq.Add(1)
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	e := &env{
		t: t, node: fmt.Sprintf("node-%d", n), ns: fmt.Sprintf("t%d-%s", n, strings.Trim(name, "-")),
		dataDir: t.TempDir(), version: "1.1.0",
		ipam:  map[string]any{"type": "host-local", "subnet": "usePodCidr"},
		extra: map[string]any{},
	}
	e.logFile = filepath.Join(e.dataDir, "cni.log")
	e.ipam["dataDir"] = e.dataDir
	if _, err := cluster.CreateNode(context.Background(), e.node, podCIDRs...); err != nil {
		t.Fatal(err)
	}
	if err := cluster.CreateNamespace(context.Background(), e.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(e.logFile); err == nil {
				t.Logf("plugin log:\n%s", b)
			}
		}
	})
	return e
}

func (e *env) conf() []byte {
	return harness.NetConf{Version: e.version, Name: networkName, Node: e.node, Kubeconfig: kubeconfig,
		StateDir: e.stateDir(), LogFile: e.logFile, IPAM: e.ipam, Extra: e.extra}.JSON()
}

// pod is one pod sandbox (the harness's fixture, shared with the calico
// and faults suites).
type pod = harness.Sandbox

// newPod creates the Pod object (unless noObject) and a netns for a sandbox.
func (e *env) newPod(name string, noObject bool) *pod {
	e.t.Helper()
	if !noObject {
		if _, err := cluster.CreatePod(context.Background(), e.ns, name, e.node); err != nil {
			e.t.Fatal(err)
		}
	}
	return e.sandbox(name)
}

// sandbox makes a new sandbox (netns + container ID) for a pod name.
func (e *env) sandbox(name string) *pod {
	return &pod{
		Namespace:   e.ns,
		Name:        name,
		ContainerID: fmt.Sprintf("%s-%s-%d", e.ns, name, seq.Add(1)),
		Netns:       harness.NewNetNST(e.t, "pod"),
		HostVeth:    naming.HostVeth("cali", e.ns, name),
	}
}

type cniResult = harness.CNIResult

// plugin is our calico binary with the env's configuration.
func (e *env) plugin() harness.Plugin {
	return harness.Plugin{Name: "kdd-cni", Binary: filepath.Join(binDir, "calico"), Path: binDir, Conf: e.conf()}
}

func (e *env) call(cmd string, p *pod, conf []byte) harness.CNIResult {
	return cluster.RunCNI(context.Background(), p.Call(e.plugin(), cmd, conf))
}

// cniCall is cmd for p with conf and CNI_ARGS args instead of p's.
func cniCall(e *env, p *pod, cmd string, conf []byte, args string) harness.CNICall {
	c := p.Call(e.plugin(), cmd, conf)
	c.Args = args
	return c
}

// add runs ADD and parses the result.
func (e *env) add(p *pod) {
	e.t.Helper()
	if err := cluster.Add(context.Background(), e.plugin(), p); err != nil {
		e.t.Fatal(err)
	}
}

// check runs CHECK with the ADD result as prevResult.
func (e *env) check(p *pod) harness.CNIResult {
	return cluster.Check(context.Background(), e.plugin(), p)
}

func (e *env) del(p *pod) {
	e.t.Helper()
	if err := cluster.Del(context.Background(), e.plugin(), p); err != nil {
		e.t.Fatal(err)
	}
}

// annotations of a pod from the API server (as admin).
func (e *env) annotations(name string) map[string]string {
	e.t.Helper()
	p, err := cluster.Admin.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Annotations
}

// leases lists host-local's lease files: IP → container ID.
func (e *env) leases() map[string]string { return harness.HostLocalLeases(e.dataDir, networkName) }

// inNode runs netlink queries in the node namespace.
func inNode(t *testing.T, fn func() error) {
	t.Helper()
	if err := cluster.DoInNode(fn); err != nil {
		t.Fatal(err)
	}
}

func linkExists(t *testing.T, name string) bool {
	var ok bool
	inNode(t, func() error {
		_, err := netlink.LinkByName(name)
		ok = err == nil
		return nil
	})
	return ok
}

// hostRoutesTo lists node routes whose dst is ip/32 or ip/128.
func hostRoutesTo(t *testing.T, ip net.IP) []netlink.Route {
	var out []netlink.Route
	inNode(t, func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.Equal(ip) {
				out = append(out, r)
			}
		}
		return nil
	})
	return out
}

func readSysctl(t *testing.T, n *harness.NetNS, key string) string {
	var v string
	do := cluster.DoInNode
	if n != nil {
		do = n.Do
	}
	if err := do(func() error {
		b, err := os.ReadFile("/proc/sys/" + key)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// assertGone proves the sandbox left nothing: no host veth, no host route,
// no lease of its container ID.
func (e *env) assertGone(p *pod, ips []net.IP) {
	e.t.Helper()
	if linkExists(e.t, p.HostVeth) {
		e.t.Errorf("host veth %s still exists", p.HostVeth)
	}
	for _, ip := range ips {
		if r := hostRoutesTo(e.t, ip); len(r) > 0 {
			e.t.Errorf("host route to %s still exists: %v", ip, r)
		}
	}
	for ip, owner := range e.leases() {
		if owner == p.ContainerID {
			e.t.Errorf("lease %s of %s still held", ip, p.ContainerID)
		}
	}
}

func cniErr(t *testing.T, r harness.CNIResult) *types.Error {
	t.Helper()
	if r.Err == nil {
		t.Fatalf("expected failure, got success: %s", r.Stdout)
	}
	var e types.Error
	if err := json.Unmarshal(r.Stdout, &e); err != nil || e.Msg == "" {
		t.Fatalf("no CNI error on stdout: %q (%v)", r.Stdout, r.Err)
	}
	return &e
}

func deleteNow() metav1.DeleteOptions {
	var zero int64
	return metav1.DeleteOptions{GracePeriodSeconds: &zero}
}

func t0ctx() context.Context { return context.Background() }
