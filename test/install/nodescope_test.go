package install

import (
	"context"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// TestNodeScopedCNIIdentity: install-cni binds the CNI token to its Node;
// with the shipped admission policy that token patches pods on its node and
// is refused for any other node's pods; a token bound to no node patches
// nothing; the token dies with its Node.
func TestNodeScopedCNIIdentity(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	cp := suite.CP
	for _, m := range []string{"rbac-cni.yaml", "admission-node-scope.yaml"} {
		if err := cp.ApplyManifest(ctx, harness.Manifest(m), false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, "kdd-cni-node-scope", metav1.DeleteOptions{})
		_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, "kdd-cni-node-scope", metav1.DeleteOptions{})
	})
	for _, n := range []struct{ node, cidr, pod string }{{"scope-a", "10.231.1.0/24", "pa"}, {"scope-b", "10.231.2.0/24", "pb"}} {
		if _, err := cp.CreateNode(ctx, n.node, n.cidr); err != nil {
			t.Fatal(err)
		}
		if _, err := cp.CreatePod(ctx, "scope", n.pod, n.node); err != nil {
			t.Fatal(err)
		}
	}
	unbound, _, err := cp.ClientFor(writeUnboundKubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	// The apiserver loads a new policy within a second or so.
	deadline := time.Now().Add(15 * time.Second)
	for patchAnnotation(ctx, unbound, "pa") == nil {
		if time.Now().After(deadline) {
			t.Fatal("a CNI token bound to no node still patches pods 15 s after the policy was applied")
		}
		time.Sleep(200 * time.Millisecond)
	}
	h := newHost(t)
	h.env["KUBERNETES_NODE_NAME"] = "scope-a"
	if out, err := h.install(); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out)
	}
	a, _, err := cp.ClientFor(h.path("etc/cni/net.d/calico-kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	review, err := a.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := review.Status.UserInfo.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != "scope-a" {
		t.Errorf("the CNI token's node-name is %v, want [scope-a]", got)
	}
	if err := patchAnnotation(ctx, a, "pa"); err != nil {
		t.Errorf("node A's token could not patch a pod on node A: %v", err)
	}
	if err := patchAnnotation(ctx, a, "pb"); err == nil || !strings.Contains(err.Error(), "only patch pods on its own node") {
		t.Errorf("node A's token patching a pod on node B: %v, want refused by the admission policy", err)
	}

	if err := cp.Admin.CoreV1().Nodes().Delete(ctx, "scope-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		_, err := a.CoreV1().Pods("scope").Get(ctx, "pb", metav1.GetOptions{})
		if err != nil && strings.Contains(err.Error(), "Unauthorized") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node A's token still works 15 s after its Node was deleted: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func patchAnnotation(ctx context.Context, c kubernetes.Interface, pod string) error {
	_, err := c.CoreV1().Pods("scope").Patch(ctx, pod, types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"cni.projectcalico.org/containerID":"x"}}}`), metav1.PatchOptions{}, "status")
	return err
}

// writeUnboundKubeconfig mints a plain (unbound) token for the CNI identity.
func writeUnboundKubeconfig(t *testing.T) string {
	p := t.TempDir() + "/unbound.kubeconfig"
	if err := suite.CP.ServiceAccountKubeconfig(context.Background(), p, "kube-system", "kdd-cni-plugin", 600); err != nil {
		t.Fatal(err)
	}
	return p
}
