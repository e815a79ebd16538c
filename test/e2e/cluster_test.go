package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// TestTwoNodeInstall is the seed journey as a user makes it: two machines
// (kubelet + containerd + runc, each in its own network and mount
// namespace; node-a on containerd 1.6, node-b on 2.x), the controller-manager allocating their podCIDRs, static
// routes between them; then the manifests applied through the API server
// exactly as `kubectl apply --server-side -f conf/calico-crds.yaml` and
// `kubectl apply -f conf/kdd-cni.yaml` create them (images named for the
// local builds). The DaemonSets install the CNI and run Felix; the nodes
// turn Ready; pods on both nodes reach each other; NetworkPolicy across the
// nodes is enforced, also with Felix switched onto Typha and back off
// (typhaJourney); deleting pods, restarting kubelet and containerd,
// rolling the DaemonSet and draining a node leak nothing, and running pods
// keep their network throughout the roll.
func TestTwoNodeInstall(t *testing.T) {
	harness.RequireRoot(t)
	work := t.TempDir()
	kddArchive, felixArchive := installImages(t, work)
	kddArchive2, err := buildKddImage(work, kddImage2)
	if err != nil {
		t.Fatal(err)
	}
	calico, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	typhaArchive, err := buildTyphaImage(work, calico)
	if err != nil {
		t.Fatal(err)
	}
	// node-b is IPv6-primary (its kubelet reports fd00:99::12 first): the
	// DaemonSet's NODE_IP, and so the metrics address, is IPv6 there.
	// node-b runs containerd 2.x (conflist 1.1.0, STATUS), node-a 1.6:
	// one DaemonSet across both, as during a runtime upgrade.
	c := newCluster(t, []clusterNode{{name: "node-a", runtime: containerd16}, {name: "node-b", ipv6Primary: true, runtime: containerd2(t)}}, 1,
		kddArchive, kddArchive2, felixArchive, typhaArchive)
	for _, n := range c.nodes {
		c.expectNotReady(n)
	}
	start := time.Now()
	c.install(nil, nil)
	t.Logf("install: DaemonSets ready and both nodes Ready %s after the apply", time.Since(start).Round(time.Millisecond))
	c.assertConfVersionFollowsRuntime()
	c.assertNodeIPs()

	a, b := c.nodes[0], c.nodes[1]
	pods := map[*node][]string{a: {"a1", "a2"}, b: {"b1", "b2"}}
	for n, names := range pods {
		lat := n.createPods(names)
		var ds []time.Duration
		for _, d := range lat {
			ds = append(ds, d)
		}
		p50, p99 := percentiles(ds)
		t.Logf("%s: %d pods create → Ready p50 %s p99 %s", n.name, len(ds), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		n.assertPodNetworks(t, names)
	}
	c.expect("across nodes, no policy", [][2]string{{"a1", "b1"}, {"b1", "a1"}, {"a2", "b2"}}, nil)
	t.Run("startup burst on both nodes at once", func(t *testing.T) {
		type count struct{ all, patches float64 }
		const size = 15
		before := map[*node]count{}
		for _, n := range c.nodes {
			all, patches := n.addRequests(t, 2)
			before[n] = count{all, patches}
		}
		c.burst(t, size)
		for _, n := range c.nodes {
			n.checkMetrics(t, 2+size, size) // every sandbox so far, and the burst's deletions
			// Exactly one request per ADD, the WorkloadEndpoint's PATCH:
			// the runtime passed the pod's annotations, the sidecar the
			// node's podCIDRs.
			all, patches := n.addRequests(t, 2+size)
			all, patches = all-before[n].all, patches-before[n].patches
			t.Logf("%s (%s): %d ADDs sent %v API requests, %v of them PATCHes", n.name, n.runtime.name, size, all, patches)
			if all != size || patches != size {
				t.Errorf("%s (%s): %d ADDs sent %v requests (%v PATCHes), want exactly one PATCH each", n.name, n.runtime.name, size, all, patches)
			}
		}
	})
	c.policyAcrossNodes()
	c.adminPolicyTiers()
	t.Run("Typha switched on and off", c.typhaJourney)

	t.Run("rolling the DaemonSet keeps running pods networked", func(t *testing.T) { c.roll(t) })
	t.Run("kubelet and containerd restarts", func(t *testing.T) {
		b.restartContainerd()
		b.restartKubelet()
		c.expect("after restarts on node-b", [][2]string{{"a1", "b1"}, {"b1", "a1"}}, nil)
		b.createPods([]string{"b3"})
		c.expect("new pod after restarts", [][2]string{{"a1", "b3"}, {"b3", "a2"}}, nil)
		b.assertPodNetworks(t, []string{"b1", "b2", "b3"})
	})
	t.Run("runtime state wiped: leaks reclaimed over CRI", func(t *testing.T) {
		c.wipeRuntime(t, b, []string{"b1", "b2"}, []string{"b3"})
		c.expect("after the wipe", [][2]string{{"a1", "b1"}, {"b2", "a2"}}, nil)
	})
	t.Run("drain", func(t *testing.T) { c.drain(a, "a1", "a2") })
	b.deletePods([]string{"b1", "b2"})
	for _, n := range c.nodes {
		n.assertNothingLeft(t)
		c.assertNoJournal(n)
	}
}

// cluster is a cluster of hosts under test.
type cluster struct {
	t     *testing.T
	nodes []*node
}

// clusterNode is a node of a cluster to make.
type clusterNode struct {
	name        string
	ipv6Primary bool             // the kubelet reports the host's IPv6 address first
	runtime     containerRuntime // containerd 1.6 unless set
}

// newCluster starts a node (containerd + kubelet) on a new host per entry,
// numbered from first, with the image archives imported, and routes the
// podCIDRs between them. No CNI yet: install does that.
func newCluster(t *testing.T, nodes []clusterNode, first int, archives ...string) *cluster {
	c := startCluster(t, nodes, first, archives...)
	c.routeBetweenNodes(true)
	return c
}

// startCluster starts the nodes with no routes between them.
func startCluster(t *testing.T, nodes []clusterNode, first int, archives ...string) *cluster {
	c := &cluster{t: t}
	t.Cleanup(c.uninstall) // last: after the nodes are gone
	for i, cn := range nodes {
		h, err := cp.AddHost(cn.name, first+i)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close) // after the node's own cleanup (LIFO)
		c.nodes = append(c.nodes, startHostNode(t, h, cn.runtime, cn.ipv6Primary, archives...))
	}
	return c
}

// routeBetweenNodes is the "user-supplied networking" of a policy-only
// install: with nodes, each node routes the other's podCIDR via the other
// node; and the network's router (the bridge's gateway, where the test
// probes from, which forwards nothing between the nodes) routes both.
func (c *cluster) routeBetweenNodes(nodes bool) {
	for _, n := range c.nodes {
		nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
		if err != nil {
			c.t.Fatal(err)
		}
		for _, cidr := range nd.Spec.PodCIDRs {
			for _, other := range c.nodes {
				if nodes && other != n {
					if err := other.host.RouteVia(cidr, n.host.IP); err != nil {
						c.t.Fatal(err)
					}
				}
			}
			if err := cp.RouteVia(cidr, n.host.IP); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// assertConfVersionFollowsRuntime: install-cni wrote each node's conflist
// for the runtime its Node reports (the cluster mixes 1.6 and 2.x).
func (c *cluster) assertConfVersionFollowsRuntime() {
	for _, n := range c.nodes {
		n.assertConfVersion(c.t)
	}
}

// assertNodeIPs: each node's kdd-cni pod runs on the node's primary address
// (status.hostIP, its NODE_IP: IPv6 on an IPv6-primary node) and serves
// metrics there (its sidecar starts serving just after the pod turns
// Ready: it has no readiness probe of its own), never restarted.
func (c *cluster) assertNodeIPs() {
	ctx := context.Background()
	for _, n := range c.nodes {
		err := harness.Poll(20*time.Second, 500*time.Millisecond, func() error { _, _, err := n.scrape(); return err })
		if err != nil {
			c.t.Errorf("%s: no metrics on %s: %v", n.name, net.JoinHostPort(n.nodeIP(), metricsPort), err)
		}
		pods, lerr := cp.Admin.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{
			LabelSelector: "k8s-app=kdd-cni-node", FieldSelector: "spec.nodeName=" + n.name})
		if lerr != nil || len(pods.Items) != 1 {
			c.t.Fatalf("%s: want one kdd-cni-node pod: %v", n.name, lerr)
		}
		pod := pods.Items[0]
		if pod.Status.HostIP != n.nodeIP() {
			c.t.Errorf("%s: kdd-cni-node pod's hostIP %s, want the node's primary address %s", n.name, pod.Status.HostIP, n.nodeIP())
		}
		for _, st := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
			if st.RestartCount != 0 {
				c.t.Errorf("%s: container %s restarted %d times", n.name, st.Name, st.RestartCount)
			}
		}
		if err == nil {
			c.t.Logf("%s: hostIP %s (hostIPs %v), metrics served there", n.name, pod.Status.HostIP, pod.Status.HostIPs)
		}
	}
}

// uninstall removes what the install and the nodes left in the API server,
// so later tests' nodes run no DaemonSet pods.
func (c *cluster) uninstall() {
	ctx := context.Background()
	for _, ds := range []string{"kdd-cni-node", "calico-node"} {
		_ = cp.Admin.AppsV1().DaemonSets("kube-system").Delete(ctx, ds, metav1.DeleteOptions{})
	}
	for _, cm := range []string{"kubernetes-services-endpoint", "kdd-cni-config"} {
		_ = cp.Admin.CoreV1().ConfigMaps("kube-system").Delete(ctx, cm, metav1.DeleteOptions{})
	}
	// The admission policies scope the identity the ConfigMap names; without
	// it they scope nothing, but the next suite must not inherit them.
	for _, p := range []string{"kdd-cni-node-scope", "kdd-cni-token-scope"} {
		_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, p, metav1.DeleteOptions{})
		_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, p, metav1.DeleteOptions{})
	}
	for _, n := range c.nodes {
		_ = cp.Admin.CoreV1().Nodes().Delete(ctx, n.name, metav1.DeleteOptions{})
	}
	zero := int64(0)
	_ = cp.Admin.CoreV1().Pods("kube-system").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
}

// expectNotReady: before the install the kubelet reports no CNI.
func (c *cluster) expectNotReady(n *node) {
	nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, cond := range nd.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			c.t.Fatalf("%s is Ready before any CNI is installed", n.name)
		}
	}
}

// install applies the manifests as a user does, with the local images, the
// API server's endpoint (Calico's kubernetes-services-endpoint ConfigMap:
// the DaemonSets cannot count on kube-proxy), felixEnv added to Felix's
// environment and calicoKeys to the calico plugin's netconf (in the
// ConfigMap's template); then waits for both DaemonSets and every node Ready.
func (c *cluster) install(felixEnv map[string]string, calicoKeys map[string]any) {
	ctx := context.Background()
	endpoint := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes-services-endpoint", Namespace: "kube-system"},
		Data: map[string]string{"KUBERNETES_SERVICE_HOST": harness.ClusterGateway.IP.String(), "KUBERNETES_SERVICE_PORT": "6443"}}
	if _, err := cp.Admin.CoreV1().ConfigMaps("kube-system").Create(ctx, endpoint, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	crds := filepath.Join(harness.RepoRoot(), "conf", "calico-crds.yaml")
	if err := cp.ApplyCRDs(ctx, crds); err != nil {
		c.t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "conf", "kdd-cni.yaml"))
	if err != nil {
		c.t.Fatal(err)
	}
	// Leak reclamation every 10 s, collecting what was stale for 30 s.
	text := strings.NewReplacer("image: kdd-cni:dev", "image: "+kddImage,
		"image: quay.io/calico/node:v3.31.0", "image: "+felixImage,
		"image: quay.io/calico/typha:v3.31.0", "image: "+typhaImage,
		"  veth_mtu: \"\"\n", "  veth_mtu: \"\"\n  leak_reclaim_interval: 10s\n  leak_reclaim_grace: 30s\n").Replace(string(bundle))
	for k, v := range calicoKeys {
		b, err := json.Marshal(v)
		if err != nil {
			c.t.Fatal(err)
		}
		text = strings.Replace(text, `          "type": "calico",`+"\n", fmt.Sprintf(`          "type": "calico", %q: %s,`+"\n", k, b), 1)
	}
	for k, v := range felixEnv {
		text = strings.Replace(text, "            - name: FELIX_HEALTHENABLED\n",
			fmt.Sprintf("            - name: %s\n              value: %q\n            - name: FELIX_HEALTHENABLED\n", k, v), 1)
	}
	for _, want := range []string{kddImage, felixImage, typhaImage, "leak_reclaim_interval"} {
		if !strings.Contains(text, want) {
			c.t.Fatalf("conf/kdd-cni.yaml changed shape: %q not substituted", want)
		}
	}
	path := filepath.Join(c.t.TempDir(), "kdd-cni.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if err := cp.ApplyManifest(ctx, path, false); err != nil {
		c.t.Fatal(err)
	}
	for _, n := range c.nodes {
		n.waitReady()
	}
	c.waitDaemonSet("kdd-cni-node", kddImage)
	c.waitDaemonSet("calico-node", felixImage)
}

// waitDaemonSet waits until the DaemonSet runs image, ready, on every node.
func (c *cluster) waitDaemonSet(name, image string) { c.waitDaemonSetIn("kube-system", name, image) }

// waitDaemonSetIn is waitDaemonSet for a DaemonSet in namespace ns.
func (c *cluster) waitDaemonSetIn(ns, name, image string) {
	var last string
	c.nodes[0].waitFor("DaemonSet "+name+" rolled out with "+image, 180*time.Second, func() bool {
		ds, err := cp.Admin.AppsV1().DaemonSets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		s := ds.Status
		last = fmt.Sprintf("%+v", s)
		return ds.Spec.Template.Spec.Containers[0].Image == image && s.ObservedGeneration == ds.Generation &&
			s.DesiredNumberScheduled == int32(len(c.nodes)) && s.UpdatedNumberScheduled == s.DesiredNumberScheduled &&
			s.NumberReady == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
	})
	c.t.Logf("DaemonSet %s: %s", name, last)
}

// probe asks pod from to fetch pod to (pod-to-pod, across nodes or not).
func (c *cluster) probe(from, to string) error {
	ipFrom, ipTo := getPod(c.t, from).Status.PodIP, getPod(c.t, to).Status.PodIP
	got, err := httpGet(fmt.Sprintf("http://%s:8080/probe?addr=%s:8080", ipFrom, ipTo))
	if err == nil && got != "hello from "+to+" via "+from {
		err = fmt.Errorf("%s → %s: %q", from, to, got)
	}
	return err
}

// expect waits for the closed pairs to be blocked first (the step's policy
// is in force), then for the open pairs to connect.
func (c *cluster) expect(step string, open, closed [][2]string) {
	c.t.Helper()
	for _, p := range closed {
		c.nodes[0].waitFor(step+": "+p[0]+" blocked from "+p[1], 30*time.Second, func() bool { return c.probe(p[0], p[1]) != nil })
	}
	for _, p := range open {
		var last error
		c.nodes[0].waitFor(step+": "+p[0]+" reaches "+p[1], 30*time.Second, func() bool {
			last = c.probe(p[0], p[1])
			return last == nil
		})
	}
}

// burst creates size pods on each node at once and reports each node's
// create → Ready latencies; then deletes them, leaving the node as it was.
func (c *cluster) burst(t *testing.T, size int) {
	var wg sync.WaitGroup
	lat := make([]map[string]time.Duration, len(c.nodes))
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat[i] = n.createPods(burstNames("burst-"+n.name, size))
		}()
	}
	wg.Wait()
	for i, n := range c.nodes {
		var ds []time.Duration
		for _, d := range lat[i] {
			ds = append(ds, d)
		}
		p50, p99 := percentiles(ds)
		t.Logf("%s: %d-pod burst (both nodes at once) create → Ready p50 %s p99 %s", n.name, len(ds), p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	}
	for _, n := range c.nodes {
		n.deletePods(burstNames("burst-"+n.name, size))
	}
}

// policyAcrossNodes: deny all ingress to b1 (node-b), then allow it from a1
// (node-a) only.
func (c *cluster) policyAcrossNodes() {
	ctx := context.Background()
	policies := cp.Admin.NetworkingV1().NetworkPolicies(namespace)
	sel := func(app string) metav1.LabelSelector {
		return metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "deny-b1"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: sel("b1"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := policies.Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	// A probe is asked of the source pod over HTTP, so b1 cannot be a
	// source while its ingress is denied: a1 → b2 stays open instead.
	c.expect("deny ingress to b1", [][2]string{{"a1", "b2"}}, [][2]string{{"a1", "b1"}, {"a2", "b1"}, {"b2", "b1"}})
	fromA1 := sel("a1")
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "allow-a1-to-b1"}, Spec: networkingv1.NetworkPolicySpec{
		PodSelector: sel("b1"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &fromA1}}}}}}
	if _, err := policies.Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	c.expect("allow a1 → b1", [][2]string{{"a1", "b1"}}, [][2]string{{"a2", "b1"}, {"b2", "b1"}})
	for _, name := range []string{"deny-b1", "allow-a1-to-b1"} {
		if err := policies.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			c.t.Fatal(err)
		}
	}
	c.expect("policies deleted", [][2]string{{"a2", "b1"}, {"b2", "b1"}}, nil)
}

// roll changes the kdd-cni DaemonSet's image while pods on both nodes
// probe each other without pause; none of those probes may fail.
func (c *cluster) roll(t *testing.T) {
	ctx := context.Background()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"initContainers":[{"name":"install-cni","image":%q}],"containers":[{"name":"token-refresh","image":%q}]}}}}`, kddImage2, kddImage2)
	start := time.Now()
	s := c.probesDuring([][2]string{{"a1", "b2"}, {"b2", "a1"}}, func() {
		if _, err := cp.Admin.AppsV1().DaemonSets("kube-system").Patch(ctx, "kdd-cni-node", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		c.waitDaemonSet("kdd-cni-node", kddImage2)
		time.Sleep(time.Second) // probes after the roll too
	})
	t.Logf("roll: %s; %d pod-to-pod probes across nodes during it, %d failed", time.Since(start).Round(time.Millisecond), s.probes, s.failures)
	if s.failures > 0 {
		t.Errorf("running pods lost their network during the roll: %d of %d probes failed, first: %v", s.failures, s.probes, s.first)
	}
	pods, err := cp.Admin.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kdd-cni-node"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Spec.InitContainers[0].Image != kddImage2 || !ready(&p) {
			t.Errorf("DaemonSet pod %s on %s: image %s ready %v", p.Name, p.Spec.NodeName, p.Spec.InitContainers[0].Image, ready(&p))
		}
	}
	for _, n := range c.nodes {
		n.createPods([]string{"roll-" + n.name})
	}
	c.expect("pods created after the roll", [][2]string{{"roll-node-a", "roll-node-b"}, {"roll-node-b", "roll-node-a"}}, nil)
	for _, n := range c.nodes {
		n.deletePods([]string{"roll-" + n.name})
	}
}

// probeStats counts the probes of probesDuring.
type probeStats struct {
	probes, failures int64
	first            any // the first failure's error text
}

// probesDuring runs fn while, for each pair, the first pod probes the
// second every 100 ms without pause, and counts those probes.
func (c *cluster) probesDuring(pairs [][2]string, fn func()) probeStats {
	var probes, failures atomic.Int64
	var first atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				probes.Add(1)
				if err := c.probe(p[0], p[1]); err != nil {
					failures.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	func() {
		defer func() { close(stop); wg.Wait() }() // also when fn fails the test
		fn()
	}()
	return probeStats{probes.Load(), failures.Load(), first.Load()}
}

// drain cordons n and evicts its pods (DaemonSet pods stay), as kubectl
// drain does; their leases, links and annotations go with them.
func (c *cluster) drain(n *node, names ...string) {
	ctx := context.Background()
	cordon := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := cp.Admin.CoreV1().Nodes().Patch(ctx, n.name, types.StrategicMergePatchType, cordon, metav1.PatchOptions{}); err != nil {
		c.t.Fatal(err)
	}
	for _, name := range names {
		ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
		if err := cp.Admin.CoreV1().Pods(namespace).EvictV1(ctx, ev); err != nil {
			c.t.Fatalf("evict %s: %v", name, err)
		}
	}
	n.waitFor("drained pods gone", 120*time.Second, func() bool {
		for _, name := range names {
			if _, err := cp.Admin.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
				return false
			}
		}
		return true
	})
	n.assertNothingLeft(c.t)
	uncordon := []byte(`{"spec":{"unschedulable":false}}`)
	if _, err := cp.Admin.CoreV1().Nodes().Patch(ctx, n.name, types.StrategicMergePatchType, uncordon, metav1.PatchOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// assertNoJournal: every annotation clear reached the API server.
func (c *cluster) assertNoJournal(n *node) {
	entries, _ := os.ReadDir(string(nodestate.Dir(n.stateDir).Journal()))
	if len(entries) != 0 {
		c.t.Errorf("%s: %d annotation clears still journaled", n.name, len(entries))
	}
}
