// Package e2e proves kdd-cni where it runs for real: a kubelet and containerd
// (runc) on a single-node cluster on loopback, calling the plugin that
// install-cni installed. Root only; `make e2e`.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

const namespace = "e2e"

var (
	cp         *harness.ControlPlane
	rootfs     string
	image      string // OCI archive of the agent image
	kubeletBin string
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, harness.Options{Cluster: true, ClusterCIDR: "10.244.0.0/16"}, setup))
}

// setup: the node's runtime and kubelet binaries, the image tree, the agent
// image, the tests' namespace.
func setup(s *harness.Suite) error {
	cp = s.CP
	for _, b := range []string{"containerd", "runc", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("e2e needs %s (apt-get install containerd runc; make e2e installs them)", b)
		}
	}
	tools, err := harness.ToolsDir()
	if err != nil {
		return err
	}
	if kubeletBin = filepath.Join(tools, "kubelet"); !exists(kubeletBin) {
		out, err := exec.Command(filepath.Join(harness.RepoRoot(), "test/tools/build.sh"), "kubelet").Output()
		if err != nil {
			return fmt.Errorf("failed to build the kubelet: %w", err)
		}
		kubeletBin = filepath.Join(strings.TrimSpace(string(out)), "kubelet")
	}
	if rootfs, err = harness.RootFS(); err != nil {
		return err
	}
	// Named like the harness's own temp dirs (prefix and PID), so a killed
	// run's is swept by the next one.
	work, err := os.MkdirTemp("", fmt.Sprintf("kddcni-%d-e2e-image-", os.Getpid()))
	if err != nil {
		return err
	}
	s.Cleanup(func() { os.RemoveAll(work) })
	if image, err = buildImage(work); err != nil {
		return err
	}
	ctx := context.Background()
	if err := cp.CreateNamespace(ctx, namespace); err != nil {
		return err
	}
	return cp.WaitServiceAccount(ctx, namespace, "default")
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// requireTools is the tools directory, once every named tool is in it;
// else the test fails, naming what to build and the make target that does.
func requireTools(t *testing.T, target string, names ...string) string {
	t.Helper()
	tools, err := harness.ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range names {
		if !exists(filepath.Join(tools, b)) {
			t.Fatalf("%s is missing: test/tools/build.sh %s (make %s does)", b, strings.Join(names, " "), target)
		}
	}
	return tools
}
