package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

func pod(name, nodeName string) *corev1.Pod {
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName: nodeName, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "agent", Image: Image, ImagePullPolicy: corev1.PullNever, Command: []string{"/agent", "serve"}}},
		},
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// createPods creates pods and waits until all are Ready, returning each
// pod's create → Ready latency as seen by the API client.
func (n *node) createPods(names []string) map[string]time.Duration {
	ctx := context.Background()
	created := map[string]time.Time{}
	for _, name := range names {
		created[name] = time.Now()
		if _, err := cp.Admin.CoreV1().Pods(namespace).Create(ctx, pod(name, n.name), metav1.CreateOptions{}); err != nil {
			n.t.Fatal(err)
		}
	}
	lat := map[string]time.Duration{}
	n.waitFor(fmt.Sprintf("%d pods Ready", len(names)), 180*time.Second, func() bool {
		l, err := cp.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for i := range l.Items {
			p := &l.Items[i]
			if _, want := created[p.Name]; want && ready(p) && lat[p.Name] == 0 {
				lat[p.Name] = time.Since(created[p.Name])
			}
		}
		return len(lat) == len(names)
	})
	return lat
}

func (n *node) deletePods(names []string) {
	ctx := context.Background()
	zero := int64(0)
	for _, name := range names {
		_ = cp.Admin.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}
	n.waitFor("pods deleted", 120*time.Second, func() bool {
		l, err := cp.Admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for _, p := range l.Items {
			if slices.Contains(names, p.Name) {
				return false
			}
		}
		return true
	})
	// A pod deleted with grace 0 leaves the API before the kubelet has torn
	// down its sandbox (StopPodSandbox, CNI DEL): wait for the node, so a
	// restart of containerd or the kubelet that follows does not interrupt
	// that DEL and leave the sandbox to the kubelet's garbage collection.
	n.waitFor("the deleted pods' sandboxes torn down on "+n.name, 120*time.Second, func() bool {
		links := n.caliLinks(n.t)
		for _, name := range names {
			if slices.Contains(links, naming.HostVeth("cali", namespace, name)) {
				return false
			}
		}
		return len(n.leaseOwners()) == len(links)
	})
}

func getPod(t *testing.T, name string) *corev1.Pod {
	p, err := cp.Admin.CoreV1().Pods(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// leaseOwners: IP → container ID, from host-local's store.
func (n *node) leaseOwners() map[string]string {
	return harness.HostLocalLeases(n.leases, "k8s-pod-network")
}

// caliLinks are the host veths in the node's network namespace (the dump
// retried when links change during it).
func (n *node) caliLinks(t *testing.T) []string {
	var names []string
	if err := n.do(func() error {
		links, err := netlinksafe.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "cali") {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return names
}

// assertPodNetworks: each pod Running with our IP from the node's podCIDR,
// status.podIPs equal to our annotation, its lease held by the sandbox the
// annotation names, its host veth present; and nothing else held.
func (n *node) assertPodNetworks(t *testing.T, names []string) {
	t.Helper()
	nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, podCIDR, _ := net.ParseCIDR(nd.Spec.PodCIDRs[0])
	leases := n.leaseOwners()
	links := map[string]bool{}
	for _, l := range n.caliLinks(t) {
		links[l] = true
	}
	for _, name := range names {
		p := getPod(t, name)
		if p.Status.Phase != corev1.PodRunning || len(p.Status.PodIPs) == 0 {
			t.Errorf("pod %s: phase %s, IPs %v", name, p.Status.Phase, p.Status.PodIPs)
			continue
		}
		ip := p.Status.PodIPs[0].IP
		if !podCIDR.Contains(net.ParseIP(ip)) {
			t.Errorf("pod %s IP %s outside the node's podCIDR %s", name, ip, podCIDR)
		}
		var want []string
		for _, s := range p.Status.PodIPs {
			want = append(want, s.IP+"/32")
		}
		a := p.Annotations
		if a["cni.projectcalico.org/podIPs"] != strings.Join(want, ",") || a["cni.projectcalico.org/podIP"] != want[0] {
			t.Errorf("pod %s: status.podIPs %v, annotations %v", name, p.Status.PodIPs, a)
		}
		if owner := leases[ip]; owner == "" || owner != a["cni.projectcalico.org/containerID"] {
			t.Errorf("pod %s: lease of %s held by %q, annotation names %q", name, ip, owner, a["cni.projectcalico.org/containerID"])
		}
		if veth := naming.HostVeth("cali", namespace, name); !links[veth] {
			t.Errorf("pod %s: host veth %s missing", name, veth)
		}
	}
	if len(leases) != len(names) || len(links) != len(names) {
		t.Errorf("%d leases and %d cali links for %d pods: %v %v (links of pods: %v)", len(leases), len(links), len(names), leases, links, podsOfLinks(links))
	}
}

func (n *node) assertNothingLeft(t *testing.T) {
	t.Helper()
	n.waitFor("leases and links released", 30*time.Second, func() bool {
		return len(n.leaseOwners()) == 0 && len(n.caliLinks(t)) == 0
	})
}

// httpGet fetches a URL from the node.
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: cp.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (n *node) assertTraffic(t *testing.T, a, b string) {
	t.Helper()
	ipA, ipB := getPod(t, a).Status.PodIP, getPod(t, b).Status.PodIP
	if got, err := httpGet("http://" + ipA + ":8080/"); err != nil || got != "hello from "+a {
		t.Errorf("node → pod %s: %q %v", a, got, err)
	}
	if got, err := httpGet(fmt.Sprintf("http://%s:8080/probe?addr=%s:8080", ipA, ipB)); err != nil || got != "hello from "+b+" via "+a {
		t.Errorf("pod %s → pod %s: %q %v", a, b, got, err)
	}
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(p float64) time.Duration { return ds[int(p/100*float64(len(ds)-1)+0.5)] }
	return at(50), at(99)
}

func burstNames(prefix string, n int) []string {
	var names []string
	for i := 0; i < n; i++ {
		names = append(names, fmt.Sprintf("%s-%02d", prefix, i))
	}
	return names
}

// TestSingleNode runs one node's checks on each runtime: Debian's
// containerd 1.6 (conflist 1.0.0) and containerd 2.x (1.1.0, STATUS).
func TestSingleNode(t *testing.T) {
	harness.RequireRoot(t)
	t.Run(containerd16.name, func(t *testing.T) { singleNode(t, containerd16, "e2e-node") })
	t.Run(containerd2x.name, func(t *testing.T) { singleNode(t, containerd2(t), "e2e-node-c2") })
}

func singleNode(t *testing.T, rt containerRuntime, name string) {
	n := startNodeWith(t, name, rt, nil)
	n.assertConfVersion(t)
	pods := []string{"web-a", "web-b"}
	t.Run("pods get our IPs from the node's podCIDR", func(t *testing.T) {
		n.createPods(pods)
		n.assertPodNetworks(t, pods)
	})
	t.Run("node-to-pod and pod-to-pod traffic", func(t *testing.T) {
		n.assertTraffic(t, "web-a", "web-b")
	})
	t.Run("a killed sandbox is recreated with correct annotations", func(t *testing.T) {
		old := getPod(t, "web-a").Annotations["cni.projectcalico.org/containerID"]
		runcRoot := filepath.Join(n.dir, "runc", "k8s.io")
		out, err := exec.Command("runc", "--root", runcRoot, "state", old).Output()
		if err != nil {
			t.Fatalf("runc state %s: %v", old, err)
		}
		var st struct{ Pid int }
		_ = json.Unmarshal(out, &st)
		if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n.waitFor("a new sandbox for web-a, published by the kubelet", 120*time.Second, func() bool {
			p := getPod(t, "web-a")
			id := p.Annotations["cni.projectcalico.org/containerID"]
			return id != old && id != "" && ready(p) && len(n.leaseOwners()) == len(pods) &&
				p.Annotations["cni.projectcalico.org/podIP"] == p.Status.PodIP+"/32"
		})
		n.assertPodNetworks(t, pods)
		n.assertTraffic(t, "web-a", "web-b")
	})
	t.Run("restarting containerd and the kubelet loses nothing", func(t *testing.T) {
		before := map[string]string{}
		for _, name := range pods {
			before[name] = getPod(t, name).Annotations["cni.projectcalico.org/containerID"]
		}
		n.restartContainerd()
		n.restartKubelet()
		time.Sleep(3 * time.Second) // let the kubelet resync its pods
		for _, name := range pods {
			if got := getPod(t, name).Annotations["cni.projectcalico.org/containerID"]; got != before[name] {
				t.Errorf("pod %s sandbox changed across restarts: %s → %s", name, before[name], got)
			}
		}
		n.assertPodNetworks(t, pods)
		n.assertTraffic(t, "web-a", "web-b")
	})
	t.Run("deleting pods releases every lease and link", func(t *testing.T) {
		n.deletePods(pods)
		n.assertNothingLeft(t)
	})

	t.Run("a burst of 30 pods starts, and nothing is left after", func(t *testing.T) {
		names := burstNames("burst", 30)
		n.createPods(names)
		n.assertPodNetworks(t, names)
		n.deletePods(names)
		n.assertNothingLeft(t)
	})
	if rt.v2() {
		t.Run("STATUS decides NetworkReady", func(t *testing.T) { n.statusDecidesReadiness(t) })
	}
	// Calico's binary is the anchor on one runtime; ptp on both.
	t.Run("pod startup", func(t *testing.T) { startupBursts(t, n, !rt.v2()) })
	n.assertNothingLeft(t)
}

func harnessBin(t *testing.T) string {
	d, err := harness.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// podsOfLinks names the pods of the namespace (live, or created and deleted
// by this run, as far as the API still knows) whose host veths are links.
func podsOfLinks(links map[string]bool) map[string]string {
	out := map[string]string{}
	l, _ := cp.Admin.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{})
	var names []string
	for _, p := range l.Items {
		names = append(names, p.Name)
	}
	names = append(names, "roll-node-a", "roll-node-b")
	for _, name := range names {
		if v := naming.HostVeth("cali", namespace, name); links[v] {
			out[v] = name
		}
	}
	return out
}
