package podcidr

// The node's podCIDRs from the API server and their cache on the node.
// Shared by `calico` and the `podcidr` IPAM shim. (Whether the node can
// serve pods is package health's; the rewrite in podcidr.go stays pure.)

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/statedir"
)

// NodeCIDRs are one Node object's podCIDRs, by family.
type NodeCIDRs struct {
	Node  string `json:"node"`
	UID   string `json:"uid"`
	CIDRs CIDRs  `json:"cidrs"`
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

// The node's podCIDRs are cached on the node, with the UID of the Node
// object they belong to. ADD allocates from the cache while it reads the
// Node, and keeps the allocation only if the Node's podCIDRs are still the
// cached ones: a Node re-created under the same name (new UID) refreshes the
// cache, and one with other podCIDRs makes ADD allocate again.
func cachePath(stateDir, node string) string {
	return filepath.Join(statedir.Dir(stateDir).PodCIDRs(), node+".json")
}

// Cached reads the cache; ok is false when there is none.
func Cached(stateDir, node string) (NodeCIDRs, bool) {
	c, ok := decodeCIDRs(cachePath(stateDir, node), node)
	return c.NodeCIDRs, ok
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
