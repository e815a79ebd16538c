package kube

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
)

// Patch types for PatchPodStatus.
const (
	MergePatch = "application/merge-patch+json"
	JSONPatch  = "application/json-patch+json"
)

// ObjectMeta is the part of an object's metadata the plugins read.
type ObjectMeta struct {
	UID             string            `json:"uid"`
	ResourceVersion string            `json:"resourceVersion"`
	Annotations     map[string]string `json:"annotations"`
}

// Pod is the part of a Pod the plugins read.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
}

func podPath(namespace, name string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods/" + url.PathEscape(name)
}

// NodeFacts are what the plugin reads of a Node.
type NodeFacts struct {
	UID      string
	PodCIDRs []string // spec.podCIDRs (spec.podCIDR if only that is set)
	// MaxPods is status.capacity.pods, the kubelet's maxPods (0 if unset).
	MaxPods int
}

// node is the part of a Node kdd-cni reads.
type node struct {
	Metadata struct {
		UID string `json:"uid"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Capacity struct {
			Pods string `json:"pods"`
		} `json:"capacity"`
	} `json:"status"`
}

func (n *node) facts() NodeFacts {
	f := NodeFacts{UID: n.Metadata.UID, PodCIDRs: n.Spec.PodCIDRs}
	if len(f.PodCIDRs) == 0 && n.Spec.PodCIDR != "" {
		f.PodCIDRs = []string{n.Spec.PodCIDR}
	}
	f.MaxPods, _ = strconv.Atoi(n.Status.Capacity.Pods)
	return f
}

func nodePath(name string) string { return "/api/v1/nodes/" + url.PathEscape(name) }

// NodeFacts reads a Node's UID, podCIDRs and pod capacity.
func (c *Client) NodeFacts(ctx context.Context, name string) (NodeFacts, error) {
	var n node
	// resourceVersion=0: served from the apiserver's watch cache, no etcd
	// read; a Node's podCIDRs never change once set, so any version of the
	// same Node (UID) will do.
	if err := c.do(ctx, "GET", nodePath(name)+"?resourceVersion=0", "", nil, &n); err != nil {
		return NodeFacts{}, err
	}
	return n.facts(), nil
}

// NodePodCIDRs returns a Node's UID and podCIDRs.
func (c *Client) NodePodCIDRs(ctx context.Context, node string) (uid string, cidrs []string, err error) {
	f, err := c.NodeFacts(ctx, node)
	if err != nil {
		return "", nil, fmt.Errorf("failed to read node %q from the API server: %w", node, err)
	}
	return f.UID, f.PodCIDRs, nil
}

// GetPod reads one Pod.
func (c *Client) GetPod(ctx context.Context, namespace, name string) (*Pod, error) {
	var p Pod
	if err := c.do(ctx, "GET", podPath(namespace, name), "", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PatchPodStatus patches a Pod through its status subresource.
func (c *Client) PatchPodStatus(ctx context.Context, namespace, name, patchType string, patch []byte) error {
	return c.do(ctx, "PATCH", podPath(namespace, name)+"/status", patchType, patch, nil)
}

// Version reads /version: proves the server is reachable and the credentials
// are accepted.
func (c *Client) Version(ctx context.Context) (string, error) {
	var v struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := c.do(ctx, "GET", "/version", "", nil, &v); err != nil {
		return "", err
	}
	return v.GitVersion, nil
}

// OpenPodStatusPatch opens a PATCH of a Pod through its status subresource
// whose patch is sent later (Pending.Send).
func (c *Client) OpenPodStatusPatch(ctx context.Context, namespace, name, patchType string) *Pending {
	return c.Open(ctx, "PATCH", podPath(namespace, name)+"/status", patchType)
}
