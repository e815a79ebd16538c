package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// The flannel image: flanneld and its conflist installer at the paths its
// manifest runs them from, with the netfilter tools it execs.
const flannelImage = "kdd-cni.local/flannel:v0.28.10"

// flannelBackend is a flannel backend under test and the MTU its pods need
// on a node whose uplink has a 1500-byte MTU.
type flannelBackend struct {
	name   string // net-conf.json's Backend.Type
	mtu    int    // FLANNEL_MTU: VXLAN's header costs 50 bytes
	prefix string // of the node names
	first  int    // the first host's index
}

// TestFlannelInstall is the seeds' "kubeadm + flannel" install: two nodes
// (kubelet, containerd, kube-proxy), kdd-cni's manifest applied, then
// flannel's own manifest (github.com/flannel-io/flannel v0.28.10's
// Documentation/kube-flannel.yml, its kube-subnet-mgr over the Nodes'
// podCIDRs) in place of the static routes of TestTwoNodeInstall; the
// network's router forwards nothing between the nodes, so pods reach each
// other only through flannel. Once with the VXLAN backend and once with
// host-gw.
func TestFlannelInstall(t *testing.T) {
	harness.RequireRoot(t)
	tools := requireTools(t, "flannel", "kube-proxy", "flanneld", "flannel-install-conf", "kube-flannel.yml")
	work := t.TempDir()
	kddArchive, felixArchive := installImages(t, work)
	flannelArchive, err := buildFlannelImage(work, tools)
	if err != nil {
		t.Fatal(err)
	}
	for _, be := range []flannelBackend{{"vxlan", 1450, "vxlan", 11}, {"host-gw", 1500, "hostgw", 13}} {
		t.Run(be.name, func(t *testing.T) {
			c := startCluster(t, []clusterNode{{name: be.prefix + "-a"}, {name: be.prefix + "-b"}}, be.first,
				kddArchive, felixArchive, flannelArchive)
			c.routeBetweenNodes(false)
			c.startKubeProxies()
			c.flannelJourney(t, be, filepath.Join(tools, "kube-flannel.yml"))
		})
	}
}

// buildFlannelImage packs flanneld and install-conf where flannel's image
// has them (/opt/bin), with the netfilter tools.
func buildFlannelImage(dir, tools string) (string, error) {
	files, err := netfilterFiles()
	if err != nil {
		return "", err
	}
	for src, dst := range map[string]string{"flanneld": "/opt/bin/flanneld", "flannel-install-conf": "/opt/bin/install-conf"} {
		b, err := os.ReadFile(filepath.Join(tools, src))
		if err != nil {
			return "", err
		}
		files = append(files, harness.ImageFile{Path: dst, Mode: 0o755, Data: b})
	}
	files = append(files, harness.ImageFile{Path: "/tmp", Dir: true}, harness.ImageFile{Path: "/etc", Dir: true},
		harness.ImageFile{Path: "/run", Dir: true})
	path := filepath.Join(dir, "flannel-image.tar")
	return path, harness.Image{Name: flannelImage, Files: files, Entrypoint: []string{"/opt/bin/flanneld"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}.WriteArchive(path)
}

// flannelJourney installs kdd-cni then flannel, as the seeds' example
// does, and checks everything a user relies on over flannel's routes.
func (c *cluster) flannelJourney(t *testing.T, be flannelBackend, manifest string) {
	c.install(nil, nil)
	c.installFlannel(t, be, manifest)
	c.assertFlannelNodes(t, be)

	a, b := c.nodes[0], c.nodes[1]
	pods := map[*node][]string{a: {"a1", "a2"}, b: {"b1", "b2"}}
	for n, names := range pods {
		n.createPods(names)
		n.assertPodNetworks(t, names) // kdd-cni networked them: lease, veth, WorkloadEndpoint
	}
	c.expect("across nodes over flannel", [][2]string{{"a1", "b1"}, {"b1", "a1"}, {"a2", "b2"}}, nil)
	rules := map[*node][]string{}
	for _, n := range c.nodes {
		if rules[n] = n.flannelRules(t); len(rules[n]) == 0 {
			t.Errorf("%s: no FLANNEL iptables rules", n.name)
		}
	}
	t.Run("MTU", func(t *testing.T) { c.assertFlannelMTU(t, be, a, "a1", "b1") })
	t.Run("Service ClusterIP across nodes", func(t *testing.T) { c.serviceAcrossNodes(t, "a1", "b1") })
	c.policyAcrossNodes()
	t.Run("flanneld restart keeps traffic", func(t *testing.T) {
		for _, n := range c.nodes {
			c.restartFlanneld(t, n)
		}
		for n, names := range pods {
			n.assertPodNetworks(t, names) // flannel touched no lease or veth of ours
		}
	})
	a.deletePods(pods[a])
	b.deletePods(pods[b])
	for _, n := range c.nodes {
		n.assertNothingLeft(t)
		c.assertFlannelRoutes(t, be, n) // and our DELs touched none of flannel's
		if now := n.flannelRules(t); !slices.Equal(now, rules[n]) {
			t.Errorf("%s: flannel's iptables rules changed:\nbefore %q\nafter  %q", n.name, rules[n], now)
		} else {
			t.Logf("%s: flannel's %d iptables rules unchanged", n.name, len(now))
		}
	}
}

// flannelRules are the node's iptables rules (every table) of flannel's
// chains or jumping to them, sorted.
func (n *node) flannelRules(t *testing.T) []string {
	var dump strings.Builder
	cmd := exec.Command("iptables-save")
	cmd.Stdout = &dump
	if err := n.host.Run(cmd); err != nil {
		t.Fatalf("iptables-save on %s: %v", n.name, err)
	}
	var rules []string
	for _, line := range strings.Split(dump.String(), "\n") {
		if strings.HasPrefix(line, "-A ") && strings.Contains(line, "FLANNEL") {
			rules = append(rules, line)
		}
	}
	slices.Sort(rules)
	return rules
}

// installFlannel applies flannel's manifest as its users do, with the
// local image; one change: its install-cni-plugin init container (which
// copies flannel's own CNI plugin from another image) is left out, since
// the runtime never runs that plugin here (our conflist sorts first) and
// its module is not on the module proxy. Waits for flanneld on every node.
func (c *cluster) installFlannel(t *testing.T, be flannelBackend, manifest string) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "      - name: install-cni-plugin\n")
	end := strings.Index(text, "      - name: install-cni\n")
	if start < 0 || end < start {
		t.Fatalf("%s changed shape: no install-cni-plugin init container before install-cni", manifest)
	}
	text = text[:start] + text[end:]
	for old, new := range map[string]string{
		"image: ghcr.io/flannel-io/flannel:v0.28.10": "image: " + flannelImage,
		`"Type": "vxlan"`: fmt.Sprintf("%q: %q", "Type", be.name),
	} {
		if !strings.Contains(text, old) {
			t.Fatalf("%s changed shape: %q not found", manifest, old)
		}
		text = strings.ReplaceAll(text, old, new)
	}
	path := filepath.Join(t.TempDir(), "kube-flannel.yml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: this one before the nodes stop.
	t.Cleanup(func() { removeFlannel(t) })
	if err := cp.ApplyManifest(context.Background(), path, false); err != nil {
		t.Fatal(err)
	}
	c.waitDaemonSetIn("kube-flannel", "kube-flannel-ds", flannelImage)
}

// removeFlannel deletes what flannel's manifest created and waits for its
// pods to go, so the next cluster starts without it.
func removeFlannel(t *testing.T) {
	ctx := context.Background()
	_ = cp.Admin.CoreV1().Namespaces().Delete(ctx, "kube-flannel", metav1.DeleteOptions{})
	_ = cp.Admin.RbacV1().ClusterRoleBindings().Delete(ctx, "flannel", metav1.DeleteOptions{})
	_ = cp.Admin.RbacV1().ClusterRoles().Delete(ctx, "flannel", metav1.DeleteOptions{})
	if err := harness.Poll(60*time.Second, 500*time.Millisecond, func() error {
		if _, err := cp.Admin.CoreV1().Namespaces().Get(ctx, "kube-flannel", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	}); err != nil {
		t.Logf("namespace kube-flannel still terminating after 60 s: %v", err)
	}
}

// assertFlannelNodes: on each node flanneld wrote its subnet.env with the
// backend's MTU, and install-cni followed it into our conflist; flannel's
// conflist sits beside ours, sorting after it, so the runtime uses ours and
// install-cni warned of nothing; flannel routes the other node's podCIDR.
func (c *cluster) assertFlannelNodes(t *testing.T, be flannelBackend) {
	for _, n := range c.nodes {
		env := n.host.Root("/run/flannel/subnet.env")
		var b []byte
		n.waitFor("flannel's subnet.env", 60*time.Second, func() bool {
			var err error
			b, err = os.ReadFile(env)
			return err == nil
		})
		if want := fmt.Sprintf("FLANNEL_MTU=%d\n", be.mtu); !strings.Contains(string(b), want) {
			t.Errorf("%s: subnet.env %q, want %s", n.name, b, want)
		}
		ours := filepath.Join(n.host.Root("/etc/cni/net.d"), "10-calico.conflist")
		n.waitFor(fmt.Sprintf("our conflist with flannel's MTU %d", be.mtu), 30*time.Second, func() bool {
			return harness.ConflistMTU(ours) == be.mtu
		})
		confs, err := filepath.Glob(filepath.Join(n.host.Root("/etc/cni/net.d"), "*.conflist"))
		if err != nil || len(confs) != 2 || filepath.Base(confs[0]) != "10-calico.conflist" || filepath.Base(confs[1]) != "10-flannel.conflist" {
			t.Errorf("%s: conflists %v (want ours, then flannel's): %v", n.name, confs, err)
		}
		if logs := n.podLogs("kube-system_kdd-cni-node-"); strings.Contains(logs, "sorts before ours") || !strings.Contains(logs, fmt.Sprintf("mtu=%d", be.mtu)) {
			t.Errorf("%s: install-cni's logs: want the MTU %d from flannel and no conflist before ours:\n%s", n.name, be.mtu, logs)
		}
		c.assertFlannelRoutes(t, be, n)
		_ = n.do(func() error {
			if _, err := netlink.LinkByName("cni0"); err == nil {
				t.Errorf("%s: a cni0 bridge: flannel's CNI plugin ran", n.name)
			}
			return nil
		})
		t.Logf("%s: subnet.env %q; our conflist's MTU %d", n.name, strings.TrimSpace(string(b)), harness.ConflistMTU(ours))
	}
}

// assertFlannelRoutes: n routes every other node's podCIDR the way the
// backend does — VXLAN through flannel.1 (to the other node's VTEP address,
// onlink), host-gw via the other node's address on the uplink.
func (c *cluster) assertFlannelRoutes(t *testing.T, be flannelBackend, n *node) {
	t.Helper()
	for _, other := range c.nodes {
		if other == n {
			continue
		}
		nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), other.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, cidr, _ := net.ParseCIDR(nd.Spec.PodCIDR)
		_ = n.do(func() error {
			routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: cidr}, netlink.RT_FILTER_DST)
			if err != nil || len(routes) != 1 {
				t.Errorf("%s: routes to %s's podCIDR %s: %v %v", n.name, other.name, cidr, routes, err)
				return nil
			}
			r := routes[0]
			link, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Errorf("%s: route %v: %v", n.name, r, err)
				return nil
			}
			switch be.name {
			case "vxlan":
				if link.Attrs().Name != "flannel.1" || link.Type() != "vxlan" || link.Attrs().MTU != be.mtu || !r.Gw.Equal(cidr.IP) {
					t.Errorf("%s: route to %s via %s dev %s (%s, MTU %d): want via %s dev flannel.1 (vxlan, MTU %d)",
						n.name, cidr, r.Gw, link.Attrs().Name, link.Type(), link.Attrs().MTU, cidr.IP, be.mtu)
				}
			case "host-gw":
				if link.Attrs().Name != "eth0" || !r.Gw.Equal(other.host.IP) {
					t.Errorf("%s: route to %s via %s dev %s: want via %s dev eth0", n.name, cidr, r.Gw, link.Attrs().Name, other.host.IP)
				}
			}
			return nil
		})
	}
}

// assertFlannelMTU: the pods' MTU is flannel's, and a packet of the pod's
// MTU crosses to the other node whole, with don't-fragment set, each way
// (were the pods' MTU above the path's, as with veth_mtu 1500 on VXLAN,
// the node would answer "fragmentation needed"); and a bounded TCP
// transfer each way moves every byte (through flannel.1, by its counters,
// on VXLAN).
func (c *cluster) assertFlannelMTU(t *testing.T, be flannelBackend, n *node, local, remote string) {
	mtu := map[string]int{}
	for _, name := range []string{local, remote} {
		veth := naming.HostVeth("cali", namespace, name)
		for _, nn := range c.nodes {
			_ = nn.do(func() error {
				if l, err := netlink.LinkByName(veth); err == nil {
					mtu[name] = l.Attrs().MTU
				}
				return nil
			})
		}
		if mtu[name] != be.mtu {
			t.Errorf("pod %s: host veth %s MTU %d, want flannel's %d", name, veth, mtu[name], be.mtu)
		}
	}
	for _, p := range [][2]string{{local, remote}, {remote, local}} {
		from, to := getPod(t, p[0]).Status.PodIP, getPod(t, p[1]).Status.PodIP
		if got, err := agentGet(from, fmt.Sprintf("/ping?addr=%s&size=%d", to, mtu[p[0]])); err != nil || got != "ok" {
			t.Errorf("%s → %s: a %d-byte packet (the pod's MTU) with don't-fragment: %q %v", p[0], p[1], mtu[p[0]], got, err)
		}
	}
	const size = 4 << 20
	before := n.flannelTxBytes(t)
	push := transferRate(t, "push", local, remote, size)
	pull := transferRate(t, "pull", local, remote, size)
	sent := n.flannelTxBytes(t) - before
	t.Logf("%s: pods' MTU %d and %d; DF pings of that size both ways; 4 MiB %s → %s at %.0f Mbit/s, %s → %s at %.0f Mbit/s; flannel.1 sent %d bytes",
		be.name, mtu[local], mtu[remote], local, remote, push/1e6, remote, local, pull/1e6, sent)
	if be.name == "vxlan" && sent < size {
		t.Errorf("flannel.1 on %s sent %d bytes during a %d-byte transfer out of %s: the traffic did not go through flannel", n.name, sent, size, local)
	}
}

// flannelTxBytes is what flannel.1 on n has sent (0 without it).
func (n *node) flannelTxBytes(t *testing.T) uint64 {
	var tx uint64
	_ = n.do(func() error {
		if l, err := netlink.LinkByName("flannel.1"); err == nil && l.Attrs().Statistics != nil {
			tx = l.Attrs().Statistics.TxBytes
		}
		return nil
	})
	return tx
}

// serviceAcrossNodes: a pod reaches a ClusterIP Service whose only
// endpoint is a pod on the other node (kube-proxy's DNAT, then flannel).
func (c *cluster) serviceAcrossNodes(t *testing.T, from, backend string) {
	ctx := context.Background()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: backend + "-svc"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": backend},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	created, err := cp.Admin.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cp.Admin.CoreV1().Services(namespace).Delete(ctx, svc.Name, metav1.DeleteOptions{}) }()
	want := "hello from " + backend + " via " + from
	var got string
	c.nodes[0].waitFor(from+" reaches Service "+created.Spec.ClusterIP, 60*time.Second, func() bool {
		got, err = httpGet(fmt.Sprintf("http://%s:8080/probe?addr=%s:80", getPod(t, from).Status.PodIP, created.Spec.ClusterIP))
		return err == nil && got == want
	})
	t.Logf("%s → Service %s:80 → %s: %q", from, created.Spec.ClusterIP, backend, got)
}

// restartFlanneld deletes the flannel pod on n (the DaemonSet starts a new
// one, which takes over flannel.1 and the routes) while pods on both nodes
// probe each other without pause; none of those probes may fail.
func (c *cluster) restartFlanneld(t *testing.T, n *node) {
	ctx := context.Background()
	pods, err := cp.Admin.CoreV1().Pods("kube-flannel").List(ctx, metav1.ListOptions{LabelSelector: "app=flannel", FieldSelector: "spec.nodeName=" + n.name})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("%s: want one flannel pod: %v", n.name, err)
	}
	old := pods.Items[0]
	start := time.Now()
	s := c.probesDuring([][2]string{{"a1", "b2"}, {"b2", "a1"}}, func() {
		if err := cp.Admin.CoreV1().Pods("kube-flannel").Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		n.waitFor("a new flannel pod Ready", 120*time.Second, func() bool {
			l, err := cp.Admin.CoreV1().Pods("kube-flannel").List(ctx, metav1.ListOptions{LabelSelector: "app=flannel", FieldSelector: "spec.nodeName=" + n.name})
			return err == nil && len(l.Items) == 1 && l.Items[0].UID != old.UID && ready(&l.Items[0])
		})
		time.Sleep(2 * time.Second) // probes after the restart too
	})
	t.Logf("%s: flanneld restarted in %s; %d pod-to-pod probes across nodes during it, %d failed",
		n.name, time.Since(start).Round(time.Millisecond), s.probes, s.failures)
	if s.failures > 0 {
		t.Errorf("running pods lost traffic while flanneld restarted on %s: %d of %d probes failed, first: %v",
			n.name, s.failures, s.probes, s.first)
	}
	if s.probes == 0 {
		t.Error("no probe ran during the restart")
	}
}
