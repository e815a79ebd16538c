// Package integration runs the built `calico` binary as a runtime would,
// as root, in real network namespaces, with the real host-local and a real
// kube-apiserver + etcd, using the least-privilege CNI identity.
package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

var (
	cluster    *harness.ControlPlane
	kubeconfig string // the CNI identity's
	binDir     string
)

func TestMain(m *testing.M) {
	if v := os.Getenv(squatterEnv); v != "" {
		veth, lockFile, _ := strings.Cut(v, ",")
		squat(veth, lockFile)
		return
	}
	os.Exit(harness.RunSuite(m, harness.Options{}, func(s *harness.Suite) error {
		cluster, kubeconfig, binDir = s.CP, s.Kubeconfig, s.BinDir
		return nil
	}))
}

func requireCluster(t *testing.T) {
	t.Helper()
	harness.RequireRoot(t)
	if cluster == nil {
		t.Fatal("no control plane")
	}
}
