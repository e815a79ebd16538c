package podcidr

// The node's podCIDRs from the API server, their cache on the node, and
// whether the node is ready for pods (CNI STATUS). Shared by `calico` and
// the `podcidr` IPAM shim. (The rewrite in podcidr.go stays pure.)

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// NodeCIDRs are one Node object's podCIDRs, by family.
type NodeCIDRs struct {
	Node  string `json:"node"`
	UID   string `json:"uid"`
	CIDRs CIDRs  `json:"cidrs"`
}

// ReadNode resolves this node's name and reads its UID and spec.podCIDRs.
func ReadNode(ctx context.Context, env netconf.Env, conf *netconf.NetConf, api *kube.Client) (string, string, []string, error) {
	nodename, err := conf.ResolveNodename(env)
	if err != nil {
		return "", "", nil, err
	}
	node := conf.PodCIDRNode(nodename)
	uid, cidrs, err := api.NodePodCIDRs(ctx, node)
	if err != nil {
		return node, "", nil, fmt.Errorf("failed to read node %q from the API server: %w", node, err)
	}
	return node, uid, cidrs, nil
}

// NodePodCIDRs reads a Node's podCIDRs by family (node: the resolved name
// whose podCIDRs the configuration uses, netconf.PodCIDRNode).
func NodePodCIDRs(ctx context.Context, api *kube.Client, node string) (NodeCIDRs, error) {
	uid, cidrs, err := api.NodePodCIDRs(ctx, node)
	if err != nil {
		return NodeCIDRs{}, fmt.Errorf("failed to read node %q from the API server: %w", node, err)
	}
	byFamily, err := ByFamily(node, cidrs)
	return NodeCIDRs{Node: node, UID: uid, CIDRs: byFamily}, err
}

// Ready reports why the plugin cannot serve pods: the API server does not
// answer the configured identity, or the node lacks a podCIDR family that
// the configuration (stdin) names. nil means ready.
func Ready(ctx context.Context, env netconf.Env, conf *netconf.NetConf, stdin []byte, timeout time.Duration) error {
	fams, err := Symbols(stdin)
	if err != nil {
		return err
	}
	api, err := kube.New(conf.APIAccess(env, timeout))
	if err != nil {
		return err
	}
	node, _, cidrs, err := ReadNode(ctx, env, conf, api)
	if err != nil || !fams.Any() {
		return err
	}
	byFamily, err := ByFamily(node, cidrs)
	if err != nil {
		return err
	}
	return fams.Check(node, byFamily)
}

// The node's podCIDRs are cached on the node, with the UID of the Node
// object they belong to. ADD allocates from the cache while it reads the
// Node, and keeps the allocation only if the Node's podCIDRs are still the
// cached ones: a Node re-created under the same name (new UID) refreshes the
// cache, and one with other podCIDRs makes ADD allocate again.
func cachePath(stateDir, node string) string {
	return filepath.Join(stateDir, "podcidrs", node+".json")
}

// Cached reads the cache; ok is false when there is none.
func Cached(stateDir, node string) (NodeCIDRs, bool) {
	var c NodeCIDRs
	b, err := os.ReadFile(cachePath(stateDir, node))
	if err != nil || json.Unmarshal(b, &c) != nil || c.Node != node || c.UID == "" || (c.CIDRs.V4 == "" && c.CIDRs.V6 == "") {
		return NodeCIDRs{}, false
	}
	return c, true
}

// Store writes the cache atomically.
func Store(stateDir string, c NodeCIDRs) error {
	path := cachePath(stateDir, c.Node)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}
