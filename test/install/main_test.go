// Package install tests install-cni, the manifests and the image tree
// against a real kube-apiserver: install-cni runs with the manifests' own
// identity (kdd-cni-node, which may only mint the CNI token).
package install

import (
	"context"
	"errors"
	"fmt"
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
	if os.Geteuid() != 0 {
		fmt.Println("install tests skipped: they need root for network namespaces")
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	var err error
	if rootfs, err = harness.RootFS(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if suite, err = harness.StartSuite(ctx, harness.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer suite.Stop()
	if err := suite.CP.ApplyManifest(ctx, harness.Manifest("rbac-install.yaml"), false); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	installerKubeconfig = filepath.Join(suite.CP.Dir, "installer.kubeconfig")
	if err := suite.CP.ServiceAccountKubeconfig(ctx, installerKubeconfig, "kube-system", "kdd-cni-node", 3600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := suite.CP.CreateNode(ctx, node, "10.230.0.0/24"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, suite.CP.Logs(3000))
	}
	return code
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
