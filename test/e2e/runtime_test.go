package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerRuntime is a containerd the nodes run: Debian's 1.6 (the
// system's, CNI conflists up to 1.0.0, no STATUS) or 2.x built from the
// pinned module (test/tools/containerd: 1.1.0 results, STATUS decides the
// node's NetworkReady).
type containerRuntime struct {
	name string // as in test names: "containerd 1.6", "containerd 2.x"
	// dir holds containerd, ctr and containerd-shim-runc-v2; "" for the
	// system's (on PATH).
	dir string
}

var (
	containerd16 = containerRuntime{name: "containerd 1.6"}
	containerd2x = containerRuntime{name: "containerd 2.x"}
)

// v2 tells whether this is containerd 2.x.
func (r containerRuntime) v2() bool { return r.dir != "" }

// bin is one of the runtime's programs.
func (r containerRuntime) bin(name string) string {
	if r.dir == "" {
		return name
	}
	return filepath.Join(r.dir, name)
}

// command is how the node starts containerd: 2.x with its own directory
// first on PATH, so it runs its own shim (it looks the shim up on PATH
// before beside itself), never 1.6's.
func (r containerRuntime) command(config string) (string, []string) {
	if r.dir == "" {
		return "containerd", []string{"--config", config}
	}
	return "env", []string{"PATH=" + r.dir + ":" + os.Getenv("PATH"), r.bin("containerd"), "--config", config}
}

// config is containerd's configuration for a node: its own root, state
// and socket, runc (cgroupfs) under its own root, the CNI directories the
// DaemonSet installs into, one conflist. 1.6 reads version 2; 2.x
// version 3 (the CRI plugin split into images and runtime).
func (r containerRuntime) config(root, state, sock, sandbox, runcRoot, binDir, netDir string) string {
	if !r.v2() {
		return fmt.Sprintf(`version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, root, state, sock, sandbox, runcRoot, binDir, netDir)
	}
	return fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [%q]
    conf_dir = %q
    max_conf_num = 1
`, root, state, sock, sandbox, runcRoot, binDir, netDir)
}

// containerd2 is containerd 2.x from the tools directory (make e2e builds
// it: test/tools/build.sh containerd2).
func containerd2(t *testing.T) containerRuntime {
	t.Helper()
	tools := requireTools(t, "e2e", "containerd2")
	r := containerd2x
	r.dir = filepath.Join(tools, "containerd2")
	return r
}

// assertConfVersion: install-cni chose the conflist's cniVersion by itself
// from the runtime the Node reports (containerRuntimeVersion): 1.1.0 for
// containerd 2.x, 1.0.0 for 1.6.
func (n *node) assertConfVersion(t *testing.T) {
	t.Helper()
	nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string `json:"cniVersion"`
	}
	b, err := os.ReadFile(filepath.Join(n.netDir(), "10-calico.conflist"))
	if n.host != nil {
		b, err = os.ReadFile(filepath.Join(n.host.Root("/etc/cni/net.d"), "10-calico.conflist"))
	}
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	runtime := nd.Status.NodeInfo.ContainerRuntimeVersion
	wantRuntime, want := "containerd://1.6.", "1.0.0"
	if n.runtime.v2() {
		wantRuntime, want = "containerd://2.", "1.1.0"
	}
	t.Logf("%s: runtime %s, conflist cniVersion %s", n.name, runtime, list.CNIVersion)
	if err != nil || !strings.HasPrefix(runtime, wantRuntime) || list.CNIVersion != want {
		t.Errorf("%s: runtime %s (want %s…), conflist cniVersion %q (want %s): %v", n.name, runtime, wantRuntime, list.CNIVersion, want, err)
	}
}
