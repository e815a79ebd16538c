package main

import (
	"context"
	"encoding/json"
	"path/filepath"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// setUpCalico builds (or finds) Calico's binary, installs what it needs to
// run (Calico's CRDs, ClusterInformation default with datastoreReady, its
// identity) and returns its netconf: Calico's policy-only conflist entry
// with host-local over the same podCIDR, nodename_file_optional (no
// calico-node here) and its log at info, as that manifest ships it.
func (b *bench) setUpCalico(ctx context.Context, work string) ([]byte, string, error) {
	dir, err := harness.CalicoDir()
	if err != nil {
		return nil, "", err
	}
	if err := b.cp.InstallCalicoCRDs(ctx); err != nil {
		return nil, "", err
	}
	kubeconfig := filepath.Join(work, "calico.kubeconfig")
	if err := b.cp.CalicoCNIKubeconfig(ctx, kubeconfig); err != nil {
		return nil, "", err
	}
	conf, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "bench-calico", "type": "calico", "log_level": "info",
		"log_file_path": filepath.Join(work, "calico.log"), "datastore_type": "kubernetes",
		"nodename": node, "nodename_file_optional": true, "mtu": 1500,
		"ipam":       map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": filepath.Join(work, "theirs")},
		"policy":     map[string]any{"type": "k8s"},
		"kubernetes": map[string]any{"kubeconfig": kubeconfig},
	})
	return conf, filepath.Join(dir, "calico"), err
}
