package install

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// A node whose runtime takes CNI 1.1.0 (containerd 2) gets a 1.1.0
// conflist, which Calico v3.31's binary refuses for every command. When
// the sidecar stops, it leaves the same conflist at 1.0.0: Calico's binary,
// put in place of ours with the rights it needs, then tears down a pod
// kdd-cni networked, through that conflist. Before the stop, the same DEL
// fails on the version.
func TestStoppedSidecarLeavesRollbackConflist(t *testing.T) {
	calico, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	setRuntime(t, "containerd://2.1.4")
	if err := suite.CP.InstallCalicoCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	// Calico's binary reads ClusterInformation and namespaces: the rights a
	// binary-only rollback must grant the CNI identity (the README says so).
	if err := suite.CP.CalicoCNIKubeconfig(ctx, filepath.Join(t.TempDir(), "unused")); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kdd-cni-plugin-rollback"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "calico-cni-plugin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "kdd-cni-plugin", Namespace: "kube-system"}}}
	if _, err := suite.CP.Admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = suite.CP.Admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
	})

	h := newHost(t)
	leases := h.leasesIn(t)
	conflist := h.path("etc/cni/net.d/10-calico.conflist")
	s := startSidecar(t, h)
	waitFor(t, "the 1.1.0 conflist", func() bool { return cniVersion(conflist) == "1.1.0" })
	written, _ := os.ReadFile(conflist)

	if _, err := suite.CP.CreatePod(ctx, "rollback", "web", node); err != nil {
		t.Fatal(err)
	}
	netns := harness.NewNetNST(t, "rollback")
	cnitool := func(verb string) (string, error) { return h.cnitool(verb, netns, "rollback", "web") }
	if out, err := cnitool("add"); err != nil || !strings.Contains(out, `"cniVersion": "1.1.0"`) {
		t.Fatalf("kdd-cni ADD through the 1.1.0 conflist: %v\n%s", err, out)
	}

	// Calico's binary in place of ours.
	theirs, err := os.ReadFile(filepath.Join(calico, "calico"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.path("opt/cni/bin/calico"), theirs, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := cnitool("del"); err == nil || !strings.Contains(out, "1.1.0") {
		t.Errorf("Calico's DEL through the 1.1.0 conflist: %v, want refused on the version\n%s", err, out)
	}

	s.stop(t, syscall.SIGTERM)
	left, _ := os.ReadFile(conflist)
	if got := cniVersion(conflist); got != "1.0.0" {
		t.Fatalf("conflist after the sidecar stopped: cniVersion %q, want 1.0.0\n%s", got, left)
	}
	if !sameExceptVersion(t, written, left) {
		t.Errorf("the stopped sidecar changed more than cniVersion:\nbefore %s\nafter  %s", written, left)
	}
	if !strings.Contains(s.out.String(), "lowered") {
		t.Errorf("the sidecar did not log the change:\n%s", s.out)
	}
	if out, err := cnitool("del"); err != nil {
		t.Fatalf("Calico's DEL through the conflist kdd-cni left: %v\n%s", err, out)
	}
	if l := harness.HostLocalLeases(leases, "k8s-pod-network"); len(l) != 0 {
		t.Errorf("leases left after Calico's DEL: %v", l)
	}
	veth := naming.HostVeth("cali", "rollback", "web")
	if err := suite.CP.DoInNode(func() error {
		if _, err := netlink.LinkByName(veth); err == nil {
			t.Errorf("host veth %s left after Calico's DEL", veth)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	p, err := suite.CP.Admin.CoreV1().Pods("rollback").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || p.Annotations["cni.projectcalico.org/podIP"] != "" {
		t.Errorf("annotations after Calico's DEL: %v %v", p.Annotations, err)
	}

	// A conflist someone else rewrote meanwhile is left as it is.
	h2 := newHost(t)
	s2 := startSidecar(t, h2)
	other := h2.path("etc/cni/net.d/10-calico.conflist")
	waitFor(t, "the second 1.1.0 conflist", func() bool { return cniVersion(other) == "1.1.0" })
	theirsConf := []byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","plugins":[{"type":"calico"}]}`)
	if err := os.WriteFile(other, theirsConf, 0o600); err != nil {
		t.Fatal(err)
	}
	s2.stop(t, syscall.SIGTERM)
	if got, _ := os.ReadFile(other); !bytes.Equal(got, theirsConf) {
		t.Errorf("the stopped sidecar rewrote a conflist it had not written: %s", got)
	}
}

// setRuntime sets the node's reported container runtime for one test.
func setRuntime(t *testing.T, runtime string) {
	t.Helper()
	ctx := context.Background()
	set := func(v string) error {
		nd, err := suite.CP.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		nd.Status.NodeInfo.ContainerRuntimeVersion = v
		_, err = suite.CP.Admin.CoreV1().Nodes().UpdateStatus(ctx, nd, metav1.UpdateOptions{})
		return err
	}
	if err := set(runtime); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set("") })
}

func cniVersion(path string) string {
	var list struct {
		CNIVersion string `json:"cniVersion"`
	}
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &list) != nil {
		return ""
	}
	return list.CNIVersion
}

// sameExceptVersion: two conflists equal once cniVersion is dropped.
func sameExceptVersion(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y map[string]any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	delete(x, "cniVersion")
	delete(y, "cniVersion")
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
