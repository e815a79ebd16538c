package calico

import (
	"regexp"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

const (
	annotPodIP       = "cni.projectcalico.org/podIP"
	annotPodIPs      = "cni.projectcalico.org/podIPs"
	annotContainerID = "cni.projectcalico.org/containerID"
)

// assertTornDown proves a sandbox left nothing: no host veth, no lease of
// its container ID, podIP/podIPs cleared (containerID kept, as Calico does).
func (w *world) assertTornDown(p *pod) {
	w.t.Helper()
	if err := w.cp.DoInNode(func() error { return linkGone(p.HostVeth) }); err != nil {
		w.t.Errorf("%s: %v", p.Name, err)
	}
	for ip, owner := range harness.HostLocalLeases(w.dataDir, network) {
		if owner == p.ContainerID {
			w.t.Errorf("%s: lease %s still held", p.Name, ip)
		}
	}
	a := w.podObject(p.Name).Annotations
	if a[annotPodIP] != "" || a[annotPodIPs] != "" || a[annotContainerID] != p.ContainerID {
		w.t.Errorf("%s: annotations after DEL: %v", p.Name, a)
	}
}

func (w *world) assertAnnotated(p *pod) {
	w.t.Helper()
	a := w.podObject(p.Name).Annotations
	if a[annotPodIP] == "" || a[annotContainerID] != p.ContainerID {
		w.t.Errorf("%s: annotations after ADD: %v", p.Name, a)
	}
}

// TestSwapCalicoToKddCni: install-cni replaces Calico's binary on a node
// with running pods. Pods Calico networked keep their network, pass our
// CHECK and are torn down by our DEL; then the node rolls back, and pods we
// networked are torn down by Calico's DEL.
func TestSwapCalicoToKddCni(t *testing.T) {
	w := newWorld(t, true)
	theirs, ours := w.theirs(), w.ours(nil)

	x, y := w.newPod("x"), w.newPod("y")
	w.add(theirs, x)
	w.add(theirs, y)
	w.assertAnnotated(x)
	mustPing(t, x, y)

	// Now kdd-cni is the node's plugin.
	for _, p := range []*pod{x, y} {
		if err := w.check(ours, p); err != nil {
			t.Errorf("our CHECK of %s networked by Calico: %v", p.Name, err)
		}
	}
	z := w.newPod("z")
	w.add(ours, z)
	mustPing(t, z, y)
	mustPing(t, y, z)
	w.del(ours, x)
	w.assertTornDown(x)
	w.del(ours, x) // repeated DEL
	mustPing(t, z, y)

	// Roll back to Calico's binary.
	w.del(theirs, z)
	w.assertTornDown(z)
	w.del(theirs, y)
	w.assertTornDown(y)
	if l := harness.HostLocalLeases(w.dataDir, network); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
}

func mustPing(t *testing.T, from, to *pod) {
	t.Helper()
	for _, ip := range to.IPs() {
		if err := from.Netns.Ping(ip, 3*time.Second); err != nil {
			t.Errorf("%s → %s (%s): %v", from.Name, to.Name, ip, err)
		}
	}
}

// TestFelixRulesIdenticalToCalico: the same pods and policies, networked
// once by kdd-cni and once by Calico's own binary (each from a fresh lease
// store, so the same IPs): Felix programs identical rules.
func TestFelixRulesIdenticalToCalico(t *testing.T) {
	w := newWorld(t, false)
	w.startFelix()
	w.applyPolicy(&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "only-b-to-a"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: selectApp("a"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}}}}})
	a, b := w.newPod("a"), w.newPod("b")
	dump := func(plugin func() harness.Plugin) string {
		w.dataDir = t.TempDir()
		pl := plugin()
		for _, p := range []*pod{a, b} {
			p.ContainerID += "-" + pl.Name
			w.add(pl, p)
			w.waitEndpointUp(p)
		}
		time.Sleep(2 * time.Second) // let Felix settle
		r := w.rules()
		for _, p := range []*pod{a, b} {
			w.del(pl, p)
			w.waitEndpointGone(p)
		}
		return r
	}
	ours := dump(func() harness.Plugin { return w.ours(nil) })
	theirs := dump(w.theirs)
	mac := regexp.MustCompile(`([0-9a-f]{2}:){5}[0-9a-f]{2}`)
	ours, theirs = mac.ReplaceAllString(ours, "MAC"), mac.ReplaceAllString(theirs, "MAC")
	if ours != theirs {
		t.Errorf("Felix's rules differ:\n--- kdd-cni\n%s\n--- calico\n%s", diffLines(ours, theirs), diffLines(theirs, ours))
	}
	if !regexpMatch(ours, `cali-tw-`+a.HostVeth) {
		t.Errorf("no per-endpoint chain for %s in:\n%s", a.HostVeth, ours)
	}
}

func regexpMatch(s, pat string) bool { return regexp.MustCompile(regexp.QuoteMeta(pat)).MatchString(s) }

// diffLines lists the lines of a missing from b.
func diffLines(a, b string) string {
	in := map[string]bool{}
	for _, l := range splitLines(b) {
		in[l] = true
	}
	var out []string
	for _, l := range splitLines(a) {
		if !in[l] {
			out = append(out, l)
		}
	}
	return joinLines(out)
}
