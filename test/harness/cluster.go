package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The CNI plugin's identity, as conf/manifests/rbac-cni.yaml defines it.
const (
	CNIServiceAccount = "kdd-cni-plugin"
	CNINamespace      = "kube-system"
)

// CNIRBACManifest is the manifest that grants the CNI identity its rights.
func CNIRBACManifest() string { return Manifest("rbac-cni.yaml") }

// CreateNode creates a Node with the given podCIDRs (none leaves it without).
func (cp *ControlPlane) CreateNode(ctx context.Context, name string, podCIDRs ...string) (*corev1.Node, error) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if len(podCIDRs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDRs[0], podCIDRs
	}
	return cp.Admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
}

// CreateNamespace creates a Namespace; an existing one is fine.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) error {
	_, err := cp.Admin.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// CreatePod creates a Pod bound to node (it never runs: no kubelet).
func (cp *ControlPlane) CreatePod(ctx context.Context, namespace, name, node string) (*corev1.Pod, error) {
	if err := cp.CreateNamespace(ctx, namespace); err != nil {
		return nil, err
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "main", Image: "kdd-cni.local/test:latest"}},
		},
	}
	return cp.Admin.CoreV1().Pods(namespace).Create(ctx, p, metav1.CreateOptions{})
}

// manifestObjects decodes every object of a YAML (or JSON) file.
func manifestObjects(path string) ([]unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("failed to decode document %d of %s: %w", i, path, err)
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// ApplyManifest server-side applies every object in a YAML file as admin.
// With dryRun the apiserver validates and admits but persists nothing.
func (cp *ControlPlane) ApplyManifest(ctx context.Context, path string, dryRun bool) error {
	objs, err := manifestObjects(path)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cp.AdminConfig)
	if err != nil {
		return err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cp.AdminConfig)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("failed to map %s in %s: %w", gvk, path, err)
		}
		body, err := obj.MarshalJSON()
		if err != nil {
			return err
		}
		opts := metav1.PatchOptions{FieldManager: "kdd-cni-harness", Force: new(true)}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, opts); err != nil {
			return fmt.Errorf("failed to apply %s %s from %s: %w", gvk.Kind, obj.GetName(), path, err)
		}
	}
	return nil
}

// CNIKubeconfig applies the CNI RBAC manifest, mints a token for the CNI
// service account with the TokenRequest API and writes a kubeconfig holding
// it and the cluster CA to path. This is the identity the plugin runs with.
func (cp *ControlPlane) CNIKubeconfig(ctx context.Context, path string, ttlSeconds int64) error {
	if err := cp.ApplyManifest(ctx, CNIRBACManifest(), false); err != nil {
		return err
	}
	return cp.ServiceAccountKubeconfig(ctx, path, CNINamespace, CNIServiceAccount, ttlSeconds)
}

// ServiceAccountKubeconfig writes a kubeconfig holding a TokenRequest token
// for namespace/sa (which must exist) and the cluster CA, both inline.
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, path, namespace, sa string, ttlSeconds int64) error {
	tr, err := cp.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &ttlSeconds}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to request a token for %s/%s: %w", namespace, sa, err)
	}
	return cp.writeKubeconfig(path, &clientcmdapi.AuthInfo{Token: tr.Status.Token})
}

// NodeBoundKubeconfig writes a kubeconfig with a token of namespace/sa
// bound to the Node node, as a pod's token on that node carries its name
// (user extra authentication.kubernetes.io/node-name).
func (cp *ControlPlane) NodeBoundKubeconfig(ctx context.Context, path, namespace, sa, node string, ttlSeconds int64) error {
	n, err := cp.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to read Node %s: %w", node, err)
	}
	tr, err := cp.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: &ttlSeconds,
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Node", APIVersion: "v1", Name: node, UID: n.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to request a token for %s/%s bound to Node %s: %w", namespace, sa, node, err)
	}
	return cp.writeKubeconfig(path, &clientcmdapi.AuthInfo{Token: tr.Status.Token})
}

// TokenKubeconfig writes a kubeconfig for the cluster that holds token as
// given (e.g. a forged or expired one).
func (cp *ControlPlane) TokenKubeconfig(path, token string) error {
	return cp.writeKubeconfig(path, &clientcmdapi.AuthInfo{Token: token})
}

// Manifest is the path of a file under conf/manifests.
func Manifest(name string) string { return filepath.Join(RepoRoot(), "conf", "manifests", name) }

// ClientFor builds a clientset from a kubeconfig file, dialing into the node
// namespace like the plugin does.
func (cp *ControlPlane) ClientFor(kubeconfig string) (kubernetes.Interface, *rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg.Dial = cp.launcher.dial
	c, err := kubernetes.NewForConfig(cfg)
	return c, cfg, err
}

func loadKubeconfig(path string) (*clientcmdapi.Config, error) { return clientcmd.LoadFromFile(path) }

func writeKubeconfigFile(cfg *clientcmdapi.Config, path string) error {
	return clientcmd.WriteToFile(*cfg, path)
}

// ApplyCRDs applies the CustomResourceDefinitions of a manifest (server
// side, as `kubectl apply --server-side`) and waits until each is
// Established (its resources are served).
func (cp *ControlPlane) ApplyCRDs(ctx context.Context, path string) error {
	if err := cp.ApplyManifest(ctx, path, false); err != nil {
		return err
	}
	objs, err := manifestObjects(path)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cp.AdminConfig)
	if err != nil {
		return err
	}
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	deadline := time.Now().Add(60 * time.Second)
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		for !crdEstablished(ctx, crds, obj.GetName()) {
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established after 60 s", obj.GetName())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func crdEstablished(ctx context.Context, crds dynamic.NamespaceableResourceInterface, name string) bool {
	got, err := crds.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// WaitServiceAccount waits until the service account exists (pods that use
// it are refused before, with the ServiceAccount admission plugin).
func (cp *ControlPlane) WaitServiceAccount(ctx context.Context, namespace, name string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := cp.Admin.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service account %s/%s: %w", namespace, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
