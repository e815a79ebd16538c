package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"
)

// BoundObject is the object a token is bound to: the token dies with it.
type BoundObject struct {
	Kind, Name, UID string
}

// CreateToken mints a token for a service account with the TokenRequest
// API and returns it with its expiry. A token bound to a Node carries the
// node's name (user extra authentication.kubernetes.io/node-name) and is
// refused once that Node object is gone.
func (c *Client) CreateToken(ctx context.Context, namespace, serviceAccount string, ttl time.Duration, bound *BoundObject) (string, time.Time, error) {
	spec := map[string]any{"expirationSeconds": int64(ttl / time.Second)}
	if bound != nil {
		spec["boundObjectRef"] = map[string]string{"apiVersion": "v1", "kind": bound.Kind, "name": bound.Name, "uid": bound.UID}
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
	})
	if err != nil {
		return "", time.Time{}, err
	}
	var tr struct {
		Status struct {
			Token               string    `json:"token"`
			ExpirationTimestamp time.Time `json:"expirationTimestamp"`
		} `json:"status"`
	}
	path := "/api/v1/namespaces/" + url.PathEscape(namespace) + "/serviceaccounts/" + url.PathEscape(serviceAccount) + "/token"
	if err := c.do(ctx, "POST", path, "application/json", body, &tr); err != nil {
		return "", time.Time{}, fmt.Errorf("failed to request a token for %s/%s: %w", namespace, serviceAccount, err)
	}
	if tr.Status.Token == "" {
		return "", time.Time{}, fmt.Errorf("token request for %s/%s returned no token", namespace, serviceAccount)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp, nil
}

// NodeInfo is what install-cni reads of its Node.
type NodeInfo struct {
	UID string
	// ContainerRuntimeVersion is status.nodeInfo.containerRuntimeVersion,
	// e.g. "containerd://2.0.1" ("" before the kubelet reported it).
	ContainerRuntimeVersion string
}

// Node reads a Node's UID and runtime (a quorum read: a re-created Node
// must not be answered from a cache).
func (c *Client) Node(ctx context.Context, node string) (NodeInfo, error) {
	var n struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
		Status struct {
			NodeInfo struct {
				ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
			} `json:"nodeInfo"`
		} `json:"status"`
	}
	if err := c.do(ctx, "GET", "/api/v1/nodes/"+url.PathEscape(node), "", nil, &n); err != nil {
		return NodeInfo{}, fmt.Errorf("failed to read node %q: %w", node, err)
	}
	return NodeInfo{UID: n.Metadata.UID, ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion}, nil
}

// ListPods lists the pods of a namespace ("" for all), following pages.
func (c *Client) ListPods(ctx context.Context, namespace string) ([]Pod, error) {
	path := "/api/v1/pods"
	if namespace != "" {
		path = "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods"
	}
	var all []Pod
	cont := ""
	for {
		q := url.Values{"limit": {"500"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var list struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []Pod `json:"items"`
		}
		if err := c.do(ctx, "GET", path+"?"+q.Encode(), "", nil, &list); err != nil {
			return nil, err
		}
		all = append(all, list.Items...)
		if cont = list.Metadata.Continue; cont == "" {
			return all, nil
		}
	}
}

// ResourceAccess is one verb on one resource, for CanI.
type ResourceAccess struct {
	Verb, Resource, Subresource, Namespace string
}

// CanI asks the API server whether the client's identity may do ra
// (a SelfSubjectAccessReview, which every authenticated identity may create).
func (c *Client) CanI(ctx context.Context, ra ResourceAccess) (bool, error) {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
		"spec": map[string]any{"resourceAttributes": map[string]string{
			"verb": ra.Verb, "resource": ra.Resource, "subresource": ra.Subresource, "namespace": ra.Namespace,
		}},
	})
	if err != nil {
		return false, err
	}
	var r struct {
		Status struct {
			Allowed bool `json:"allowed"`
		} `json:"status"`
	}
	if err := c.do(ctx, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json", body, &r); err != nil {
		return false, err
	}
	return r.Status.Allowed, nil
}
