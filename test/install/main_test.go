// Package install tests install-cni, the manifests and the image tree
// against a real kube-apiserver: install-cni runs with the manifests' own
// identity (kdd-cni-node, which may only mint the CNI token).
package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

const node = "install-node"

var (
	suite *harness.Suite
	// installerKubeconfig is install-cni's own credential (kdd-cni-node).
	installerKubeconfig string
	rootfs              string
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, harness.Options{}, setup))
}

// setup: the image tree, install-cni's RBAC and identity, a node.
func setup(s *harness.Suite) error {
	suite = s
	ctx := context.Background()
	var err error
	if rootfs, err = harness.RootFS(); err != nil {
		return err
	}
	if err := s.CP.ApplyManifest(ctx, harness.Manifest("rbac-install.yaml"), false); err != nil {
		return err
	}
	installerKubeconfig = filepath.Join(s.CP.Dir, "installer.kubeconfig")
	if err := s.CP.ServiceAccountKubeconfig(ctx, installerKubeconfig, "kube-system", "kdd-cni-node", 3600); err != nil {
		return err
	}
	_, err = s.CP.CreateNode(ctx, node, "10.230.0.0/24")
	return err
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
