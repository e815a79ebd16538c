package nodestate

// The plugins' cache of the node's podCIDRs.

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// The node's podCIDRs are cached on the node, with the UID of the Node
// object they belong to. ADD allocates from the cache while it reads the
// Node, and keeps the allocation only if the Node's podCIDRs are still the
// cached ones: a Node re-created under the same name (new UID) refreshes the
// cache, and one with other podCIDRs makes ADD allocate again.
func cachePath(stateDir, node string) string {
	return filepath.Join(Dir(stateDir).PodCIDRs(), node+".json")
}

// CachedPodCIDRs reads the cache; ok is false when there is none.
func CachedPodCIDRs(stateDir, node string) (podcidr.NodeCIDRs, bool) {
	c, ok := decodeCIDRs(cachePath(stateDir, node), node)
	return c.NodeCIDRs, ok
}

// StorePodCIDRs writes the cache atomically.
func StorePodCIDRs(stateDir string, c podcidr.NodeCIDRs) error {
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
