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
	PodCIDRs                []string // spec.podCIDRs (or spec.podCIDR)
	MaxPods                 int      // status.capacity.pods (0 if unset)
}

// Node reads a Node's UID, runtime, podCIDRs and pod capacity (a quorum
// read: a re-created Node must not be answered from a cache).
func (c *Client) Node(ctx context.Context, name string) (NodeInfo, error) {
	var n node
	if err := c.do(ctx, "GET", nodePath(name), "", nil, &n); err != nil {
		return NodeInfo{}, fmt.Errorf("failed to read node %q: %w", name, err)
	}
	f := n.facts()
	return NodeInfo{UID: f.UID, ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion,
		PodCIDRs: f.PodCIDRs, MaxPods: f.MaxPods}, nil
}

// NodeEvent is an Event about a Node.
type NodeEvent struct {
	Node, NodeUID   string
	Type, Reason    string // Type: Normal or Warning
	Message, Source string // Source: the reporting component
}

// eventNamespace is where Events about Nodes go, as the kubelet's do.
const eventNamespace = "default"

// NodeEventRecorded tells whether an Event with this reason is recorded
// for the Node (Events expire, an hour by default).
func (c *Client) NodeEventRecorded(ctx context.Context, node, reason string) (bool, error) {
	sel := url.QueryEscape("involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + reason)
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := c.do(ctx, "GET", "/api/v1/namespaces/"+eventNamespace+"/events?limit=1&fieldSelector="+sel, "", nil, &list); err != nil {
		return false, fmt.Errorf("failed to list events of node %q: %w", node, err)
	}
	return len(list.Items) > 0, nil
}

// RecordNodeEvent creates an Event about a Node.
func (c *Client) RecordNodeEvent(ctx context.Context, e NodeEvent) error {
	now := time.Now().UTC().Format(time.RFC3339)
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Event",
		"metadata":       map[string]any{"generateName": e.Node + ".", "namespace": eventNamespace},
		"involvedObject": map[string]string{"apiVersion": "v1", "kind": "Node", "name": e.Node, "uid": e.NodeUID},
		"type":           e.Type, "reason": e.Reason, "message": e.Message,
		"source":         map[string]string{"component": e.Source, "host": e.Node},
		"firstTimestamp": now, "lastTimestamp": now, "count": 1,
		"reportingComponent": e.Source, "reportingInstance": e.Node,
	})
	if err != nil {
		return err
	}
	if err := c.do(ctx, "POST", "/api/v1/namespaces/"+eventNamespace+"/events", "application/json", body, nil); err != nil {
		return fmt.Errorf("failed to record event %s on node %q: %w", e.Reason, e.Node, err)
	}
	return nil
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

// Identity is who the API server takes the client for.
type Identity struct {
	Username string
	Groups   []string
	Extra    map[string][]string
}

// Node is the node the identity's token is bound to (user extra
// authentication.kubernetes.io/node-name), "" when none.
func (i Identity) Node() string {
	if n := i.Extra["authentication.kubernetes.io/node-name"]; len(n) > 0 {
		return n[0]
	}
	return ""
}

// WhoAmI asks the API server who the client is (a SelfSubjectReview,
// which every authenticated identity may create).
func (c *Client) WhoAmI(ctx context.Context) (Identity, error) {
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	var r struct {
		Status struct {
			UserInfo struct {
				Username string              `json:"username"`
				Groups   []string            `json:"groups"`
				Extra    map[string][]string `json:"extra"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := c.do(ctx, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "application/json", body, &r); err != nil {
		return Identity{}, fmt.Errorf("failed to ask who the identity is: %w", err)
	}
	u := r.Status.UserInfo
	return Identity{Username: u.Username, Groups: u.Groups, Extra: u.Extra}, nil
}
