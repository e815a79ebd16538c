package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// conflistFile writes e's configuration as a conflist, as install-cni would.
func (e *env) conflistFile(t *testing.T, edit func(plugin map[string]any)) string {
	t.Helper()
	var plugin map[string]any
	if err := json.Unmarshal(e.conf(), &plugin); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(plugin)
	}
	list := map[string]any{"name": plugin["name"], "cniVersion": plugin["cniVersion"], "plugins": []any{plugin}}
	delete(plugin, "name")
	delete(plugin, "cniVersion")
	b, _ := json.Marshal(list)
	path := filepath.Join(e.dataDir, "10-calico.conflist")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKddctlStatus(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, podCIDRs("v4")...)
	p := e.newPod("web", false)
	e.add(p)
	defer e.del(p)
	// The kubelet admits 300 pods; the /24 has 253 addresses.
	node, err := cluster.Admin.CoreV1().Nodes().Get(ctx, e.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Capacity = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("300")}
	if _, err := cluster.Admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, code := kddctl(t, "status", "-f", e.conflistFile(t, nil))
	t.Logf("kddctl status:\n%s", out)
	words := strings.Join(strings.Fields(out), " ")
	for _, w := range []string{"OK datastore", "OK token", "OK podCIDR", "OK ipam 1 of 253 usable IPv4 addresses",
		"WARN capacity the kubelet's maxPods (300) exceeds the 253 usable IPv4 addresses", " ready"} {
		if !strings.Contains(words, w) {
			t.Errorf("status lacks %q", w)
		}
	}
	if code != 0 || strings.Contains(out, "FAIL") {
		t.Errorf("status exit %d", code)
	}
	if !strings.Contains(words, "OK podCIDR install-cni's sidecar does not publish them") {
		t.Errorf("status does not say the podCIDRs are not published:\n%s", out)
	}

	// The sidecar's copy, live: the same as the Node's, then another.
	pub, _, cidrs := e.publishPodCIDRs()
	for _, c := range []struct {
		published podcidr.NodeCIDRs
		want      string
	}{
		{podcidr.NodeCIDRs{Node: e.node, UID: string(node.UID), CIDRs: cidrs}, "OK podCIDR install-cni's sidecar publishes them from its watch"},
		{podcidr.NodeCIDRs{Node: e.node, UID: "older", CIDRs: podcidr.CIDRs{V4: "10.99.0.0/24"}},
			"WARN podCIDR install-cni's sidecar publishes 10.99.0.0/24 for Node older, the API server has " + cidrs.String()},
	} {
		if err := pub.Publish(c.published); err != nil {
			t.Fatal(err)
		}
		out, code := kddctl(t, "status", "-f", e.conflistFile(t, nil))
		if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), c.want) {
			t.Errorf("status with %+v published (%d) lacks %q:\n%s", c.published, code, c.want, out)
		}
	}

	// Another family the node lacks, and an unreachable datastore.
	out, code = kddctl(t, "status", "-f", e.conflistFile(t, func(p map[string]any) {
		p["ipam"] = map[string]any{"type": "host-local", "dataDir": e.dataDir, "ranges": rangesFor("dual")}
	}))
	if code != 1 || !strings.Contains(out, "FAIL  podCIDR ") || !strings.Contains(out, "no IPv6 podCIDR") || !strings.Contains(out, "not ready") {
		t.Errorf("status without an IPv6 podCIDR (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "status", "-f", e.conflistFile(t, func(p map[string]any) {
		p["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
	}))
	if code != 1 || !strings.Contains(strings.Join(strings.Fields(out), " "), "FAIL datastore datastore unreachable") {
		t.Errorf("status with the datastore down (%d):\n%s", code, out)
	}
}

func TestKddctlValidate(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	out, code := kddctl(t, "validate", "-f", e.conflistFile(t, nil))
	if code != 0 || strings.Contains(out, "FAIL") || strings.Contains(out, "WARN") || !strings.Contains(out, "the calico plugin accepts it") ||
		!strings.Contains(out, "OK    patch pods/status") {
		t.Errorf("validate a good conflist (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "validate", "-f", e.conflistFile(t, func(p map[string]any) { p["log_levl"] = "debug" }))
	if code != 0 || !strings.Contains(out, `WARN  key "log_levl" is not one the calico plugin reads`) {
		t.Errorf("validate with a misspelt key (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "validate", "-f", e.conflistFile(t, func(p map[string]any) { p["mtu"] = "1500" }))
	if code != 1 || !strings.Contains(out, "FAIL") || !strings.Contains(out, "mtu") {
		t.Errorf("validate with a string mtu (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "validate", "-f", e.conflistFile(t, func(p map[string]any) {
		p["kubernetes"] = map[string]any{"kubeconfig": "/nonexistent/kubeconfig"}
	}))
	if code != 1 || !strings.Contains(out, "FAIL  kubeconfig") {
		t.Errorf("validate with a missing kubeconfig (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "validate", "-f", e.conflistFile(t, nil), "--kubeconfig", cluster.AdminKubeconfig)
	if code != 0 || !strings.Contains(out, "WARN  list pods") {
		t.Errorf("validate as admin (%d):\n%s", code, out)
	}
}
