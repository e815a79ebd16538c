package installer

import (
	"context"
	"fmt"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
)

// NodeInfo is what install-cni reads of its Node.
type NodeInfo struct {
	UID string
	// ContainerRuntimeVersion is status.nodeInfo.containerRuntimeVersion,
	// e.g. "containerd://2.0.1" ("" before the kubelet reported it).
	ContainerRuntimeVersion string
	PodCIDRs                []string // spec.podCIDRs (or spec.podCIDR)
	MaxPods                 int      // status.capacity.pods (0 if unset)
}

func nodeInfo(n *corev1.Node) NodeInfo {
	info := NodeInfo{UID: string(n.UID), ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion, PodCIDRs: n.Spec.PodCIDRs}
	if len(info.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		info.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	if pods, ok := n.Status.Capacity[corev1.ResourcePods]; ok {
		info.MaxPods = int(pods.Value())
	}
	return info
}

// readNode reads the node's Node (a quorum read: a re-created Node must not
// be answered from a cache).
func (in *Installer) readNode(ctx context.Context, api *kubeclient.Client) (NodeInfo, error) {
	n, err := api.CoreV1().Nodes().Get(ctx, in.Cfg.NodeName, metav1.GetOptions{})
	if err != nil {
		return NodeInfo{}, fmt.Errorf("failed to read node %q: %w", in.Cfg.NodeName, err)
	}
	return nodeInfo(n), nil
}

// mintToken requests a token for the CNI identity bound to the node's Node
// (uid): it carries the node's name (user extra
// authentication.kubernetes.io/node-name) and dies with that Node.
func (in *Installer) mintToken(ctx context.Context, api *kubeclient.Client, uid string) (string, time.Time, error) {
	ttl := int64(in.Cfg.TokenTTL / time.Second)
	tr, err := api.CoreV1().ServiceAccounts(in.Cfg.Namespace).CreateToken(ctx, in.Cfg.ServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &ttl, BoundObjectRef: &authnv1.BoundObjectReference{
			APIVersion: "v1", Kind: "Node", Name: in.Cfg.NodeName, UID: types.UID(uid)}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("failed to request a token for %s/%s: %w", in.Cfg.Namespace, in.Cfg.ServiceAccount, err)
	}
	if tr.Status.Token == "" {
		return "", time.Time{}, fmt.Errorf("token request for %s/%s returned no token", in.Cfg.Namespace, in.Cfg.ServiceAccount)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// eventRecorder records Events about the node's Node as component kdd-cni,
// through client-go's broadcaster (which retries and aggregates); stop ends
// it.
func (in *Installer) eventRecorder(ctx context.Context, api *kubeclient.Client) (rec record.EventRecorder, stop func()) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: api.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kdd-cni", Host: in.Cfg.NodeName}), b.Shutdown
}

// nodeEventRecorded tells whether an Event with this reason is recorded for
// the node's Node (Events expire, an hour by default). Events about Nodes
// are in namespace default, as the kubelet's.
func (in *Installer) nodeEventRecorded(ctx context.Context, api *kubeclient.Client, reason string) (bool, error) {
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": in.Cfg.NodeName, "reason": reason}
	l, err := api.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: sel.String(), Limit: 1})
	if err != nil {
		return false, fmt.Errorf("failed to list events of node %q: %w", in.Cfg.NodeName, err)
	}
	return len(l.Items) > 0, nil
}

// server is the API server address for the CNI kubeconfig: KUBERNETES_SERVICE_*
// if set, else the one install-cni itself talks to.
func (in *Installer) server(api *kubeclient.Client) string {
	if s := in.Cfg.Server(); s != "" {
		return s
	}
	return api.Config.Host
}
