package install

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// TestSidecarPublishesPodCIDRs: the sidecar's watch on its Node keeps the
// node's podCIDRs on the node for the plugins (podcidr.Watched), through a
// deletion and a re-creation with other podCIDRs; a killed sidecar's copy
// is not trusted, and a stopped one withdraws it.
func TestSidecarPublishesPodCIDRs(t *testing.T) {
	const name = "watch-node"
	ctx := context.Background()
	nodes := suite.CP.Admin.CoreV1().Nodes()
	create := func(cidr string) string {
		t.Helper()
		n, err := suite.CP.CreateNode(ctx, name, cidr)
		if err != nil {
			t.Fatal(err)
		}
		return string(n.UID)
	}
	remove := func() {
		t.Helper()
		if err := nodes.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	uid := create("10.231.0.0/24")
	t.Cleanup(func() { _ = nodes.Delete(ctx, name, metav1.DeleteOptions{}) })

	h := newHost(t)
	h.env["KUBERNETES_NODE_NAME"] = name
	state := h.path("var/lib/kdd-cni")
	watched := func(what string, want func(podcidr.NodeCIDRs, bool) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, ok := podcidr.Watched(state, name)
			if want(c, ok) {
				t.Logf("%s: %+v (live %v)", what, c, ok)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %+v (live %v) after 10s", what, c, ok)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	published := func(cidr, uid string) func(podcidr.NodeCIDRs, bool) bool {
		return func(c podcidr.NodeCIDRs, ok bool) bool {
			return ok && c.Node == name && c.UID == uid && c.CIDRs == podcidr.CIDRs{V4: cidr}
		}
	}
	notLive := func(_ podcidr.NodeCIDRs, ok bool) bool { return !ok }

	s := startSidecar(t, h)
	watched("published at start", published("10.231.0.0/24", uid))
	start := time.Now()
	remove()
	watched("withdrawn when the Node is deleted", notLive)
	uid2 := create("10.231.1.0/24")
	watched("re-created with another podCIDR", published("10.231.1.0/24", uid2))
	t.Logf("deletion and re-creation followed in %s", time.Since(start).Round(time.Millisecond))

	// A killed sidecar leaves its copy behind, but not its lock.
	s.stop(t, syscall.SIGKILL)
	if _, err := os.Stat(state + "/podcidrs/" + name + ".watched.json"); err != nil {
		t.Fatalf("the killed sidecar's copy: %v", err)
	}
	if c, ok := podcidr.Watched(state, name); ok {
		t.Fatalf("trusted the killed sidecar's copy %+v", c)
	}

	// A new sidecar publishes again; stopped, it withdraws the copy.
	s = startSidecar(t, h)
	watched("published by the next sidecar", published("10.231.1.0/24", uid2))
	s.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(state + "/podcidrs/" + name + ".watched.json"); !os.IsNotExist(err) {
		t.Fatalf("a stopped sidecar left its copy: %v", err)
	}
	if _, ok := podcidr.Watched(state, name); ok {
		t.Fatal("watched after the sidecar stopped")
	}
}
