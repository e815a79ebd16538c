package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// runtimeAnnotations passes the pod's annotations as containerd and CRI-O
// do for plugins declaring the io.kubernetes.cri.pod-annotations capability.
func (e *env) runtimeAnnotations(a map[string]string) {
	if a == nil {
		a = map[string]string{}
	}
	e.extra["runtimeConfig"] = map[string]any{"io.kubernetes.cri.pod-annotations": a}
}

// annotate sets annotations on the Pod object (as admin).
func (e *env) annotate(name string, a map[string]string) {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": a}})
	if _, err := cluster.Admin.CoreV1().Pods(e.ns).Patch(context.Background(), name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// recreateNode deletes the Node and creates it again (a new UID) with other
// podCIDRs, as `kubectl delete node` followed by the kubelet re-registering
// and the controller-manager allocating does.
func (e *env) recreateNode(cidrs []string) {
	e.t.Helper()
	ctx := context.Background()
	old, err := cluster.Admin.CoreV1().Nodes().Get(ctx, e.node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cluster.Admin.CoreV1().Nodes().Delete(ctx, e.node, deleteNow()); err != nil {
		e.t.Fatal(err)
	}
	n, err := cluster.CreateNode(ctx, e.node, cidrs...)
	if err != nil {
		e.t.Fatal(err)
	}
	if n.UID == old.UID {
		e.t.Fatalf("node %s kept its UID", e.node)
	}
}

// stateDir is the plugin's state_dir in e's configuration.
func (e *env) stateDir() string { return filepath.Join(e.dataDir, "state") }

// publishPodCIDRs publishes the Node's current podCIDRs in e's state_dir
// as install-cni's sidecar does; the watch lock is held until the test
// ends (or Close). It returns the Node it read and its podCIDRs.
func (e *env) publishPodCIDRs() (*nodestate.Publisher, *corev1.Node, podcidr.CIDRs) {
	e.t.Helper()
	node, err := cluster.Admin.CoreV1().Nodes().Get(context.Background(), e.node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	cidrs, err := podcidr.ByFamily(e.node, node.Spec.PodCIDRs)
	if err != nil {
		e.t.Fatal(err)
	}
	pub, err := nodestate.NewPodCIDRPublisher(e.stateDir(), e.node)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = pub.Close() })
	if err := pub.Publish(podcidr.NodeCIDRs{Node: e.node, UID: string(node.UID), CIDRs: cidrs}); err != nil {
		e.t.Fatal(err)
	}
	return pub, node, cidrs
}

// assertInPodCIDRs: every address of p is in the Node's podCIDRs.
func (e *env) assertInPodCIDRs(p *pod, node *corev1.Node) {
	e.t.Helper()
	for _, ip := range p.IPs() {
		if !inAny(ip, node.Spec.PodCIDRs) {
			e.t.Errorf("%s got %s, outside %v", p.Name, ip, node.Spec.PodCIDRs)
		}
	}
}

func inAny(ip net.IP, cidrs []string) bool {
	for _, c := range cidrs {
		if _, n, err := net.ParseCIDR(c); err == nil && n.Contains(ip) {
			return true
		}
	}
	return false
}

// TestNodeRecreatedBetweenADDs: the Node is re-created with new podCIDRs
// between any two ADDs. No ADD fails, every address (and every lease) is in
// the Node's current podCIDRs, with and without a requested IP, and each
// ADD still makes exactly 2 requests.
func TestNodeRecreatedBetweenADDs(t *testing.T) {
	for _, fam := range []string{"v4", "dual"} {
		t.Run(fam, func(t *testing.T) {
			e := newEnv(t, podCIDRs(fam)...)
			delete(e.ipam, "subnet")
			e.ipam["ranges"] = rangesFor(fam)
			e.runtimeAnnotations(nil)
			warm := e.newPod("warm", false)
			e.add(warm) // fills the podCIDR cache
			var pods []*pod
			for i := range 4 {
				cidrs := podCIDRs(fam)
				e.recreateNode(cidrs)
				p := e.newPod(fmt.Sprintf("p%d", i), false)
				if i%2 == 1 { // request an address in the new range
					_, n, _ := net.ParseCIDR(cidrs[0])
					ip := n.IP.To4()
					p.ExtraArgs = fmt.Sprintf("IP=%d.%d.%d.%d", ip[0], ip[1], ip[2], 42)
				}
				if got := requestsOf(t, func() { e.add(p) }); got != "GET nodes, PATCH pods/status" {
					t.Errorf("ADD %d after re-creation made %s, want GET nodes + PATCH pods/status", i, got)
				}
				for _, ip := range p.IPs() {
					if !inAny(ip, cidrs) {
						t.Errorf("ADD %d got %s, outside the Node's current podCIDRs %v", i, ip, cidrs)
					}
				}
				if p.ExtraArgs != "" && p.IPs()[0].String() != strings.TrimPrefix(p.ExtraArgs, "IP=") {
					t.Errorf("ADD %d got %s, asked %s", i, p.IPs()[0], p.ExtraArgs)
				}
				for ip, owner := range e.leases() {
					if owner == p.ContainerID && !inAny(net.ParseIP(ip), cidrs) {
						t.Errorf("ADD %d left lease %s outside %v", i, ip, cidrs)
					}
				}
				if r := e.check(p); r.Err != nil {
					t.Errorf("CHECK %d: %v", i, r.Err)
				}
				pods = append(pods, p)
			}
			for _, p := range append(pods, warm) {
				ips := p.IPs()
				e.del(p)
				e.assertGone(p, ips)
			}
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
		})
	}
}

// TestPodAnnotations: Calico's pod annotations, from the runtime
// (capability) and from the API (GET pod beside IPAM).
func TestPodAnnotations(t *testing.T) {
	const mac = "c2:00:5e:10:20:30"
	for _, source := range []string{"runtime", "api"} {
		t.Run("hwAddr from "+source, func(t *testing.T) {
			e := newEnv(t, podCIDRs("dual")...)
			delete(e.ipam, "subnet")
			e.ipam["ranges"] = rangesFor("dual")
			p := e.newPod("mac", false)
			a := map[string]string{"cni.projectcalico.org/hwAddr": mac}
			if source == "runtime" {
				e.runtimeAnnotations(a)
			} else {
				e.annotate(p.Name, a)
			}
			e.add(p)
			if got := p.Result.Interfaces[1].Mac; got != mac {
				t.Errorf("result reports MAC %s, want %s", got, mac)
			}
			if err := p.Netns.Do(func() error {
				l, err := netlink.LinkByName("eth0")
				if err == nil && l.Attrs().HardwareAddr.String() != mac {
					err = fmt.Errorf("eth0 has MAC %s, want %s", l.Attrs().HardwareAddr, mac)
				}
				return err
			}); err != nil {
				t.Error(err)
			}
			if r := e.check(p); r.Err != nil {
				t.Errorf("CHECK: %v", r.Err)
			}
			// CHECK notices a MAC changed behind our back.
			if err := p.Netns.Do(func() error {
				l, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				return netlink.LinkSetHardwareAddr(l, net.HardwareAddr{0xc2, 0, 0, 0, 0, 9})
			}); err != nil {
				t.Fatal(err)
			}
			if r := e.check(p); r.Err == nil || !strings.Contains(string(r.Stdout), "MAC") {
				t.Errorf("CHECK after a MAC change: %v %s", r.Err, r.Stdout)
			}
			ips := p.IPs()
			e.del(p)
			e.assertGone(p, ips)
		})
	}
	refused := map[string]struct {
		annot map[string]string
		extra map[string]any
		want  string
	}{
		"bad hwAddr":       {map[string]string{"cni.projectcalico.org/hwAddr": "zz:00"}, nil, "failed to parse MAC address"},
		"multicast hwAddr": {map[string]string{"cni.projectcalico.org/hwAddr": "01:00:5e:00:00:01"}, nil, "unicast"},
		"ipAddrs":          {map[string]string{"cni.projectcalico.org/ipAddrs": `["10.0.0.1"]`}, nil, "ipAddrs is not compatible with configured IPAM: host-local"},
		"ipAddrsNoIpam": {map[string]string{"cni.projectcalico.org/ipAddrsNoIpam": `["10.0.0.1"]`},
			map[string]any{"feature_control": map[string]any{"ip_addrs_no_ipam": true}}, "ipAddrsNoIpam is not compatible"},
		"floatingIPs off":      {map[string]string{"cni.projectcalico.org/floatingIPs": `["1.2.3.4"]`}, nil, "not enabled: floating_ips"},
		"bad source prefixes":  {map[string]string{"cni.projectcalico.org/allowedSourcePrefixes": `["10.0.0.0/33"]`}, nil, "allowedSourcePrefixes"},
		"floatingIPs bad list": {map[string]string{"cni.projectcalico.org/floatingIPs": `1.2.3.4`}, map[string]any{"feature_control": map[string]any{"floating_ips": true}}, "JSON list"},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, podCIDRs("v4")...)
			for k, v := range tc.extra {
				e.extra[k] = v
			}
			p := e.newPod("refused", false)
			e.annotate(p.Name, tc.annot)
			r := e.call("ADD", p, e.conf())
			if ce := cniErr(t, r); !strings.Contains(ce.Msg+ce.Details, tc.want) {
				t.Errorf("error %q, want %q", ce.Msg, tc.want)
			}
			e.assertGone(p, nil)
			if l := e.leases(); len(l) != 0 {
				t.Errorf("leases left: %v", l)
			}
			if a := e.annotations(p.Name); a["cni.projectcalico.org/podIP"] != "" || a["cni.projectcalico.org/containerID"] != "" {
				t.Errorf("annotations written for a refused ADD: %v", a)
			}
		})
	}
	t.Run("floatingIPs on", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		e.extra["feature_control"] = map[string]any{"floating_ips": true}
		p := e.newPod("fip", false)
		e.annotate(p.Name, map[string]string{"cni.projectcalico.org/floatingIPs": `["192.0.2.10"]`})
		e.add(p)
		e.del(p)
	})
}

// TestAPIRequestsByAnnotationSource: with the runtime's annotations ADD
// makes 2 requests; without them it also GETs the pod (3), in parallel.
func TestAPIRequestsByAnnotationSource(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	if got := requestsOf(t, func() { e.add(e.newPod("from-api", false)) }); got != "GET nodes, GET pods, PATCH pods/status" {
		t.Errorf("ADD without runtime annotations made %s, want GET nodes, GET pods, PATCH pods/status", got)
	}
	e.runtimeAnnotations(map[string]string{})
	if got := requestsOf(t, func() { e.add(e.newPod("from-runtime", false)) }); got != "GET nodes, PATCH pods/status" {
		t.Errorf("ADD with runtime annotations made %s, want GET nodes, PATCH pods/status", got)
	}
}

// TestPolicySetupWait: ADD waits for the endpoint's status file (written
// here as Felix writes it) and returns as soon as it appears; without the
// file it returns, successfully, after the timeout.
func TestPolicySetupWait(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	dir := filepath.Join(t.TempDir(), "endpoint-status")
	e.extra["policy_setup_timeout_seconds"] = 3
	e.extra["endpoint_status_dir"] = dir
	e.runtimeAnnotations(nil)

	late := e.newPod("late", false)
	go func() {
		time.Sleep(700 * time.Millisecond)
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, harness.FelixStatusFile(e.ns, late.Name)), []byte(`{"status":"up"}`), 0o644)
	}()
	start := time.Now()
	e.add(late)
	if d := time.Since(start); d < 700*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("ADD returned after %s; want just after the status file appeared (700 ms), before the timeout", d)
	}

	never := e.newPod("never", false)
	start = time.Now()
	e.add(never)
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("ADD returned after %s without a status file, want the 3 s timeout", d)
	}
	if a := e.annotations(never.Name); a["cni.projectcalico.org/podIP"] == "" {
		t.Errorf("annotations missing after a timed-out wait: %v", a)
	}
	// Felix names a Kubernetes pod's endpoint eth0 whatever the runtime's
	// CNI_IFNAME (e.g. Multus' net1): that is the file to wait for.
	other := e.newPod("other-if", false)
	go func() {
		time.Sleep(700 * time.Millisecond)
		_ = os.WriteFile(filepath.Join(dir, harness.FelixStatusFile(e.ns, other.Name)), []byte(`{"status":"up"}`), 0o644)
	}()
	onNet1 := func(cmd string) harness.CNIResult {
		c := cniCall(e, other, cmd, e.conf(), other.Args())
		c.IfName = "net1"
		return cluster.RunCNI(context.Background(), c)
	}
	start = time.Now()
	if r := onNet1("ADD"); r.Err != nil {
		t.Fatalf("ADD on net1: %v", r.Err)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 2500*time.Millisecond {
		t.Errorf("ADD on net1 returned after %s; want just after Felix's eth0 status file appeared (700 ms), before the timeout", d)
	}
	if r := onNet1("DEL"); r.Err != nil {
		t.Errorf("DEL on net1: %v", r.Err)
	}
	e.del(late)
	e.del(never)
}

// TestReadinessGates: ADD waits for every gate to answer 200.
// TestReadinessGateStatuses: a gate answering any 2xx or 3xx is ready at
// its first poll (204 No Content, 304 Not Modified, a 302 to a 200).
func TestReadinessGateStatuses(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	var ln net.Listener
	inNode(t, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err })
	var hits atomic.Int64
	go func() {
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			switch r.URL.Path {
			case "/302":
				http.Redirect(w, r, "/200", http.StatusFound)
			default:
				code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
				w.WriteHeader(code)
			}
		}))
	}()
	t.Cleanup(func() { ln.Close() })
	// Requests the first poll makes: one, or two with the redirect.
	for path, want := range map[string]int64{"/204": 1, "/304": 1, "/302": 2} {
		hits.Store(0)
		e.extra["readiness_gates"] = []string{"http://" + ln.Addr().String() + path}
		p := e.newPod("gate"+strings.TrimPrefix(path, "/"), false)
		r := e.call("ADD", p, e.conf())
		if r.Err != nil || hits.Load() != want {
			t.Errorf("gate answering %s: ADD %v after %d request(s), want success at the first poll (%d): %s", path, r.Err, hits.Load(), want, r.Stdout)
		}
		e.del(p)
	}
}

func TestReadinessGates(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	var ln net.Listener
	inNode(t, func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err })
	ready := make(chan struct{})
	srv := &httpGate{ready: ready}
	go srv.serve(ln)
	t.Cleanup(func() { ln.Close() })
	e.extra["readiness_gates"] = []string{"http://" + ln.Addr().String() + "/ready"}
	p := e.newPod("gated", false)
	go func() { time.Sleep(1 * time.Second); close(ready) }()
	start := time.Now()
	e.add(p)
	if d := time.Since(start); d < time.Second {
		t.Errorf("ADD returned after %s, before the gate was ready", d)
	}
	if srv.hits.Load() < 2 {
		t.Errorf("gate polled %d times", srv.hits.Load())
	}
	e.del(p)
}

// K8S_CURRENT_CONTEXT (or CALICO_K8S_CURRENT_CONTEXT) in the plugin's
// environment picks the kubeconfig context instead of its current-context,
// as in Calico.
func TestKubeconfigContextFromEnvironment(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	good := cfg.CurrentContext
	cfg.Clusters["unreachable"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1", InsecureSkipTLSVerify: true}
	cfg.Contexts["broken"] = &clientcmdapi.Context{Cluster: "unreachable", AuthInfo: cfg.Contexts[good].AuthInfo}
	cfg.CurrentContext = "broken"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	e.extra["kubernetes"] = map[string]any{"kubeconfig": path}
	call := func(p *pod, env ...string) harness.CNIResult {
		c := cniCall(e, p, "ADD", e.conf(), p.Args())
		c.Env = env
		return cluster.RunCNI(context.Background(), c)
	}

	current := e.newPod("current", false)
	if ce := cniErr(t, call(current)); !strings.Contains(ce.Msg, "127.0.0.1:1") {
		t.Errorf("ADD with the kubeconfig's current-context: %q, want the unreachable server named", ce.Msg)
	}
	e.assertNothingAllocated(current, true)
	for _, name := range []string{"K8S_CURRENT_CONTEXT", "CALICO_K8S_CURRENT_CONTEXT"} {
		p := e.newPod(strings.ToLower(strings.ReplaceAll(name, "_", "-")), false)
		if r := call(p, name+"="+good); r.Err != nil {
			t.Errorf("ADD with %s=%s: %v", name, good, r.Err)
			continue
		}
		if ann := e.annotations(p.Name); ann["cni.projectcalico.org/containerID"] != p.ContainerID {
			t.Errorf("ADD with %s: annotations %v", name, ann)
		}
		e.del(p)
	}
}
