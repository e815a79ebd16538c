package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
)

// The admission policies of conf/manifests/admission-node-scope.yaml.
var scopePolicies = []string{"kdd-cni-node-scope", "kdd-cni-token-scope"}

// defaultCNIServiceAccount is install-cni's CALICO_CNI_SERVICE_ACCOUNT
// default, and the policies'.
const defaultCNIServiceAccount = "kdd-cni-plugin"

// checkScope says whether the CNI identity's token is bound to a node and,
// with an admin kubeconfig, whether the admission policies that scope it
// are in force for this very identity: each policy bound with Deny to a
// ConfigMap that names it, and a dry-run label change as the identity (on
// a pod of its node) refused. It returns 1 when scoping is not in force.
func checkScope(ctx context.Context, id authnv1.UserInfo, adminKubeconfig string, out io.Writer) int {
	node := boundNode(id)
	if node == "" {
		fmt.Fprintf(out, "WARN  node binding: %s's token carries no node name; with the admission policies in force it may patch nothing\n", id.Username)
	} else {
		fmt.Fprintf(out, "OK    node binding: %s's token is bound to node %s\n", id.Username, node)
	}
	if adminKubeconfig == "" {
		fmt.Fprintln(out, "INFO  admission: pass --admin-kubeconfig to check the policies that scope this identity")
		return 0
	}
	admin, err := kubeclient.New(kube.Access{Kubeconfig: adminKubeconfig, UserAgent: buildinfo.String("kddctl")}, "")
	if err != nil {
		fmt.Fprintf(out, "FAIL  admission: %s: %v\n", adminKubeconfig, err)
		return 1
	}
	code := 0
	for _, name := range scopePolicies {
		if err := policyInForce(ctx, admin, name, id.Username); err != nil {
			fmt.Fprintf(out, "FAIL  admission %s: %v\n", name, err)
			code = 1
		} else {
			fmt.Fprintf(out, "OK    admission %s: in force for %s\n", name, id.Username)
		}
	}
	if node == "" {
		return code
	}
	switch refused, pod, err := probeScope(ctx, admin, node, id); {
	case err != nil:
		fmt.Fprintf(out, "FAIL  admission probe: %v\n", err)
		code = 1
	case pod == "":
		fmt.Fprintf(out, "INFO  admission probe: no pod on node %s to probe with\n", node)
	case !refused:
		fmt.Fprintf(out, "FAIL  admission probe: %s may change the labels of pod %s (dry run)\n", id.Username, pod)
		code = 1
	default:
		fmt.Fprintf(out, "OK    admission probe: a label change on pod %s as %s was refused (dry run)\n", pod, id.Username)
	}
	return code
}

// policyInForce checks that the policy and its binding exist, the binding
// denies, and its ConfigMap names username as the CNI identity.
func policyInForce(ctx context.Context, admin kubernetes.Interface, name, username string) error {
	ar := admin.AdmissionregistrationV1()
	if _, err := ar.ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{}); err != nil {
		return fmt.Errorf("failed to read the policy: %w", err)
	}
	b, err := ar.ValidatingAdmissionPolicyBindings().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read its binding: %w", err)
	}
	if b.Spec.PolicyName != name || !slices.Contains(b.Spec.ValidationActions, admissionv1.Deny) {
		return fmt.Errorf("binding %s does not deny for policy %s (policyName %q, actions %v)", b.Name, name, b.Spec.PolicyName, b.Spec.ValidationActions)
	}
	ref := b.Spec.ParamRef
	if ref == nil || ref.Name == "" {
		return fmt.Errorf("binding %s names no ConfigMap", b.Name)
	}
	cm, err := admin.CoreV1().ConfigMaps(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read its ConfigMap %s/%s (without it the policy lets everything through): %w", ref.Namespace, ref.Name, err)
	}
	sa := cm.Data["cni_service_account"]
	if sa == "" {
		sa = defaultCNIServiceAccount
	}
	if want := "system:serviceaccount:" + cm.Namespace + ":" + sa; want != username {
		return fmt.Errorf("it scopes %s (ConfigMap %s/%s), not this identity", want, cm.Namespace, cm.Name)
	}
	return nil
}

// probeScope asks, as the identity (impersonated, dry run), to label a
// pod of its node; it reports whether the policy refused it and which pod
// it tried ("" when the node runs none).
func probeScope(ctx context.Context, admin *kubeclient.Client, node string, id authnv1.UserInfo) (bool, string, error) {
	pods, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node, Limit: 1})
	if err != nil {
		return false, "", fmt.Errorf("failed to list pods on node %s: %w", node, err)
	}
	if len(pods.Items) == 0 {
		return false, "", nil
	}
	p := pods.Items[0]
	as := rest.CopyConfig(admin.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: id.Username, Groups: id.Groups, Extra: map[string][]string{}}
	for k, v := range id.Extra {
		as.Impersonate.Extra[k] = v
	}
	c, err := kubernetes.NewForConfig(as)
	if err != nil {
		return false, "", err
	}
	_, err = c.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"kdd-cni.dev/scope-probe":"x"}}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "status")
	where := p.Namespace + "/" + p.Name
	switch {
	case err == nil:
		return false, where, nil
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "kdd-cni-node-scope"):
		return true, where, nil
	}
	return false, where, fmt.Errorf("failed to probe with pod %s: %w", where, err)
}

// boundNode is the node id's token is bound to (user extra
// authentication.kubernetes.io/node-name), "" when none.
func boundNode(id authnv1.UserInfo) string {
	if n := id.Extra["authentication.kubernetes.io/node-name"]; len(n) > 0 {
		return n[0]
	}
	return ""
}
