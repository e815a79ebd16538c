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
	types100 "github.com/containernetworking/cni/pkg/types/100"
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

// pod is one pod sandbox: the Pod object, its netns and container ID.
type pod struct {
	name        string
	containerID string
	netns       *harness.NetNS
	hostVeth    string
	result      *types100.Result
	raw         []byte
	// extraArgs are appended to CNI_ARGS (e.g. "IP=10.0.0.5").
	extraArgs string
}

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
		name:        name,
		containerID: fmt.Sprintf("%s-%s-%d", e.ns, name, seq.Add(1)),
		netns:       harness.NewNetNST(e.t, "pod"),
		hostVeth:    naming.HostVeth("cali", e.ns, name),
	}
}

type cniResult = harness.CNIResult

func (e *env) call(cmd string, p *pod, conf []byte) harness.CNIResult {
	return cluster.RunCNI(context.Background(), cniCall(e, p, cmd, conf, e.cniArgs(p)))
}

// cniArgs is the CNI_ARGS a runtime passes for p (with its extraArgs).
func (e *env) cniArgs(p *pod) string {
	args := fmt.Sprintf("K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=abc", e.ns, p.name, p.containerID)
	if p.extraArgs != "" {
		args += ";" + p.extraArgs
	}
	return args
}

func cniCall(e *env, p *pod, cmd string, conf []byte, args string) harness.CNICall {
	c := harness.CNICall{
		Binary: filepath.Join(binDir, "calico"), Command: cmd, ContainerID: p.containerID,
		IfName: "eth0", Path: binDir, Config: conf, Args: args,
	}
	if p.netns != nil {
		c.Netns = p.netns.Path
	}
	if cmd == "STATUS" || cmd == "GC" {
		c.IfName = ""
	}
	return c
}

// add runs ADD and parses the result.
func (e *env) add(p *pod) {
	e.t.Helper()
	r := e.call("ADD", p, e.conf())
	if r.Err != nil {
		e.t.Fatalf("ADD %s: %v", p.name, r.Err)
	}
	p.raw = r.Stdout
	if err := p.parse(e.version); err != nil {
		e.t.Fatal(err)
	}
}

// parse reads the ADD result in p.raw.
func (p *pod) parse(version string) error {
	res, err := resultForVersion(version, p.raw)
	if err != nil {
		return fmt.Errorf("parse ADD result %s: %w", p.raw, err)
	}
	if p.result, err = types100.NewResultFromResult(res); err != nil {
		return fmt.Errorf("convert ADD result %s: %w", p.raw, err)
	}
	return nil
}

// check runs CHECK with the ADD result as prevResult.
func (e *env) check(p *pod) harness.CNIResult {
	var c map[string]any
	_ = json.Unmarshal(e.conf(), &c)
	var prev map[string]any
	_ = json.Unmarshal(p.raw, &prev)
	c["prevResult"] = prev
	b, _ := json.Marshal(c)
	return e.call("CHECK", p, b)
}

func (e *env) del(p *pod) {
	e.t.Helper()
	if r := e.call("DEL", p, e.conf()); r.Err != nil {
		e.t.Fatalf("DEL %s: %v", p.name, r.Err)
	}
}

// ips of the pod from the result, as strings without mask.
func (p *pod) ips() []net.IP {
	var ips []net.IP
	for _, c := range p.result.IPs {
		ips = append(ips, c.Address.IP)
	}
	return ips
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
	if linkExists(e.t, p.hostVeth) {
		e.t.Errorf("host veth %s still exists", p.hostVeth)
	}
	for _, ip := range ips {
		if r := hostRoutesTo(e.t, ip); len(r) > 0 {
			e.t.Errorf("host route to %s still exists: %v", ip, r)
		}
	}
	for ip, owner := range e.leases() {
		if owner == p.containerID {
			e.t.Errorf("lease %s of %s still held", ip, p.containerID)
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
