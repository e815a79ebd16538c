package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// TestNodeScopedCNIIdentity: install-cni, with its pod token's node name,
// may mint the CNI token only bound to its own Node; that token changes only
// the WorkloadEndpoint annotations of pods on its node (no label, other
// annotation, finalizer or status); a token bound to no node patches
// nothing; the policies follow the ConfigMap's cni_service_account; the
// token dies with its Node.
func TestNodeScopedCNIIdentity(t *testing.T) {
	harness.RequireRoot(t)
	ctx := context.Background()
	cp := suite.CP
	for _, m := range []string{"rbac-cni.yaml", "configmap.yaml", "admission-node-scope.yaml"} {
		if err := cp.ApplyManifest(ctx, harness.Manifest(m), false); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, n := range []string{"kdd-cni-node-scope", "kdd-cni-token-scope"} {
			_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, n, metav1.DeleteOptions{})
			_ = cp.Admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, n, metav1.DeleteOptions{})
		}
		_ = cp.Admin.CoreV1().ConfigMaps("kube-system").Delete(ctx, "kdd-cni-config", metav1.DeleteOptions{})
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
	// The apiserver loads a new policy (and its ConfigMap) within a second or so.
	waitFor(t, "a CNI token bound to no node refused", func() bool { return patchAnnotation(ctx, unbound, "pa") != nil })

	// The policies match the identity the ConfigMap names, not a fixed one.
	setCNIServiceAccount(t, "another-cni")
	waitFor(t, "the policy to follow cni_service_account", func() bool { return patchAnnotation(ctx, unbound, "pa") == nil })
	setCNIServiceAccount(t, "kdd-cni-plugin")
	waitFor(t, "the policy to follow cni_service_account back", func() bool { return patchAnnotation(ctx, unbound, "pa") != nil })

	// install-cni's identity, as its pod's token on scope-a carries the node.
	installer := filepath.Join(t.TempDir(), "installer.kubeconfig")
	if err := cp.NodeBoundKubeconfig(ctx, installer, "kube-system", "kdd-cni-node", "scope-a", 600); err != nil {
		t.Fatal(err)
	}
	minter, _, err := cp.ClientFor(installer)
	if err != nil {
		t.Fatal(err)
	}
	for name, ref := range map[string]*authnv1.BoundObjectReference{
		"bound to another node": {Kind: "Node", APIVersion: "v1", Name: "scope-b"},
		"bound to nothing":      nil,
	} {
		_, err := minter.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "kdd-cni-plugin",
			&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{BoundObjectRef: ref}}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "only be minted bound to the minter's own Node") {
			t.Errorf("install identity on scope-a minting a CNI token %s: %v, want refused by the admission policy", name, err)
		}
	}
	h := newHost(t)
	h.env["KUBERNETES_NODE_NAME"] = "scope-a"
	h.env["KUBECONFIG"] = installer
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
	// Only the WorkloadEndpoint annotations, on its own node's pods.
	before, err := cp.Admin.CoreV1().Pods("scope").Get(ctx, "pa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, patch := range map[string]string{
		"label":                 `{"metadata":{"labels":{"app":"payments"}}}`,
		"allowedSourcePrefixes": `{"metadata":{"annotations":{"cni.projectcalico.org/allowedSourcePrefixes":"[\"0.0.0.0/0\"]"}}}`,
		"finalizer":             `{"metadata":{"finalizers":["example.com/hold"]}}`,
		"podIP":                 `{"status":{"podIP":"10.231.1.99","podIPs":[{"ip":"10.231.1.99"}]}}`,
		"Ready condition":       `{"status":{"conditions":[{"type":"Ready","status":"True"}]}}`,
	} {
		_, err := a.CoreV1().Pods("scope").Patch(ctx, "pa", types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		if err == nil || !strings.Contains(err.Error(), "the CNI identity may only change") {
			t.Errorf("node A's token changing a pod's %s: %v, want refused by the admission policy", name, err)
		}
	}
	after, err := cp.Admin.CoreV1().Pods("scope").Get(ctx, "pa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("a refused patch changed the pod: resourceVersion %s → %s", before.ResourceVersion, after.ResourceVersion)
	}
	// DEL's guarded clear (a JSON patch with a test op) still passes.
	clear := `[{"op":"test","path":"/metadata/annotations/cni.projectcalico.org~1containerID","value":"x"},` +
		`{"op":"remove","path":"/metadata/annotations/cni.projectcalico.org~1containerID"}]`
	if _, err := a.CoreV1().Pods("scope").Patch(ctx, "pa", types.JSONPatchType, []byte(clear), metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("node A's token clearing its annotations: %v", err)
	}

	// kddctl check says whether the scoping is in force for the identity.
	kddctl := func() (string, error) {
		cmd := exec.Command(filepath.Join(rootfs, "opt/cni/bin/kddctl"), "check",
			"--kubeconfig", h.path("etc/cni/net.d/calico-kubeconfig"), "--admin-kubeconfig", cp.AdminKubeconfig)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cp.Run(cmd)
		return out.String(), err
	}
	out, err := kddctl()
	for _, want := range []string{"OK    node binding", "OK    admission kdd-cni-node-scope", "OK    admission kdd-cni-token-scope", "OK    admission probe"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("kddctl check (%v) lacks %q:\n%s", err, want, out)
		}
	}
	setCNIServiceAccount(t, "another-cni")
	waitFor(t, "the policy to follow cni_service_account", func() bool { return patchAnnotation(ctx, unbound, "pa") == nil })
	if out, err := kddctl(); err == nil || !strings.Contains(out, "FAIL  admission kdd-cni-node-scope") || !strings.Contains(out, "FAIL  admission probe") {
		t.Errorf("kddctl check with the policies scoping another identity (%v):\n%s", err, out)
	}
	setCNIServiceAccount(t, "kdd-cni-plugin")

	if err := cp.Admin.CoreV1().Nodes().Delete(ctx, "scope-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 15*time.Second, 200*time.Millisecond, "node A's token refused once its Node is deleted", func() error {
		_, err := a.CoreV1().Pods("scope").Get(ctx, "pb", metav1.GetOptions{})
		if err != nil && strings.Contains(err.Error(), "Unauthorized") {
			return nil
		}
		return fmt.Errorf("still answered: %v", err)
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	harness.Eventually(t, 15*time.Second, 200*time.Millisecond, what, func() error {
		if !ok() {
			return errors.New("not yet")
		}
		return nil
	})
}

func setCNIServiceAccount(t *testing.T, name string) {
	t.Helper()
	patch := fmt.Sprintf(`{"data":{"cni_service_account":%q}}`, name)
	if _, err := suite.CP.Admin.CoreV1().ConfigMaps("kube-system").Patch(context.Background(), "kdd-cni-config",
		types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
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
