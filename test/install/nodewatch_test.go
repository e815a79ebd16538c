package install

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/test/harness"
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
		harness.Eventually(t, 20*time.Second, 20*time.Millisecond, what, func() error {
			if c, ok := nodestate.WatchedPodCIDRs(state, name); !want(c, ok) {
				return fmt.Errorf("still %+v (live %v)", c, ok)
			}
			return nil
		})
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

	// The token died with the old Node: the sidecar re-mints one bound to
	// the new one, told by its watch.
	harness.Eventually(t, 10*time.Second, 100*time.Millisecond, "a token bound to the re-created Node", func() error {
		if got := boundUID(t, h); got != uid2 {
			return fmt.Errorf("bound to %q, not %q\n%s", got, uid2, s.out)
		}
		return nil
	})
	if !strings.Contains(s.out.String(), "reason=\"node re-created\"") {
		t.Errorf("the re-mint does not say why:\n%s", s.out)
	}
	t.Logf("token re-minted for the new Node %s after it was created", time.Since(start).Round(time.Millisecond))

	// A killed sidecar leaves its copy behind, but not its lock.
	s.stop(t, syscall.SIGKILL)
	if _, err := os.Stat(state + "/podcidrs/" + name + ".watched.json"); err != nil {
		t.Fatalf("the killed sidecar's copy: %v", err)
	}
	if c, ok := nodestate.WatchedPodCIDRs(state, name); ok {
		t.Fatalf("trusted the killed sidecar's copy %+v", c)
	}

	// A new sidecar publishes again.
	s = startSidecar(t, h)
	watched("published by the next sidecar", published("10.231.1.0/24", uid2))

	// A sidecar that stops confirming (SIGSTOP: it holds the lock, its
	// watch hears nothing) is trusted for nodestate.PodCIDRMaxAge at most; resumed,
	// it confirms its copy again.
	if err := syscall.Kill(s.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	for {
		if _, ok := nodestate.WatchedPodCIDRs(state, name); !ok {
			break
		}
		if time.Since(stopped) > nodestate.PodCIDRMaxAge+2*time.Second {
			_ = syscall.Kill(s.pid, syscall.SIGCONT)
			t.Fatalf("a stopped sidecar's copy still trusted %s after it stopped", time.Since(stopped).Round(time.Second))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("a stopped sidecar's copy distrusted %s after it stopped", time.Since(stopped).Round(100*time.Millisecond))
	if err := syscall.Kill(s.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	watched("confirmed by the resumed sidecar", published("10.231.1.0/24", uid2))

	// A copy written behind the sidecar's back (other podCIDRs) is put
	// right by its next confirmation: the watch resumes within 18 s.
	b, _ := os.ReadFile(state + "/podcidrs/" + name + ".watched.json")
	forged := strings.Replace(string(b), "10.231.1.0/24", "10.96.0.0/24", 1)
	if err := os.WriteFile(state+"/podcidrs/"+name+".watched.json", []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 25*time.Second, 200*time.Millisecond, "a copy that differs from the Node put right", func() error {
		if c, ok := nodestate.WatchedPodCIDRs(state, name); ok && c.CIDRs.V4 != "10.231.1.0/24" {
			return fmt.Errorf("still trusted: %+v", c)
		}
		return nil
	})

	// Stopped, it withdraws the copy.
	s.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(state + "/podcidrs/" + name + ".watched.json"); !os.IsNotExist(err) {
		t.Fatalf("a stopped sidecar left its copy: %v", err)
	}
	if _, ok := nodestate.WatchedPodCIDRs(state, name); ok {
		t.Fatal("watched after the sidecar stopped")
	}
}

// boundUID is the UID of the Node the CNI kubeconfig's token is bound to
// (its kubernetes.io.node.uid claim), "" when none.
func boundUID(t *testing.T, h *host) string {
	t.Helper()
	b, err := os.ReadFile(h.path("etc/cni/net.d/calico-kubeconfig"))
	if err != nil {
		return ""
	}
	_, tok, _ := strings.Cut(string(b), "token: ")
	parts := strings.Split(strings.Trim(strings.SplitN(tok, "\n", 2)[0], "\" "), ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode the token: %v", err)
	}
	var claims struct {
		K8s struct {
			Node struct {
				UID string `json:"uid"`
			} `json:"node"`
		} `json:"kubernetes.io"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatalf("decode the token's claims: %v", err)
	}
	return claims.K8s.Node.UID
}
