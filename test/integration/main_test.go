// Package integration runs the built `calico` binary as a runtime would,
// as root, in real network namespaces, with the real host-local and a real
// kube-apiserver + etcd, using the least-privilege CNI identity.
package integration

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

var (
	cluster    *harness.ControlPlane
	kubeconfig string // the CNI identity's
	binDir     string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("integration tests skipped: they need root for network namespaces (run `sudo make test`)")
		return m.Run() // every test skips via requireCluster
	}
	suite, err := harness.StartSuite(context.Background(), harness.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := suite.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
	}()
	cluster, kubeconfig, binDir = suite.CP, suite.Kubeconfig, suite.BinDir
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "control-plane logs:\n%s\n", cluster.Logs(3000))
	}
	return code
}

func requireCluster(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	if cluster == nil {
		t.Fatal("no control plane")
	}
}
