package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// RepoRoot is the repository checkout this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// lazyDir is a directory the tests need: given by an environment variable,
// else made once per process by a build step.
type lazyDir struct {
	env   string
	build func() (string, error)
	once  sync.Once
	dir   string
	err   error
}

func (l *lazyDir) get() (string, error) {
	l.once.Do(func() {
		if l.dir = os.Getenv(l.env); l.dir == "" {
			l.dir, l.err = l.build()
		}
	})
	return l.dir, l.err
}

// script runs a repository script that prints the directory it built.
func script(what string, path ...string) func() (string, error) {
	return func() (string, error) {
		cmd := exec.Command(filepath.Join(append([]string{RepoRoot()}, path...)...))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("failed to build %s: %w", what, err)
		}
		return strings.TrimSpace(string(out)), nil
	}
}

// makeTarget runs `make target` and returns dir (under the repository).
func makeTarget(target string, dir ...string) func() (string, error) {
	return func() (string, error) {
		root := RepoRoot()
		if out, err := exec.Command("make", "-C", root, target).CombinedOutput(); err != nil {
			return "", fmt.Errorf("failed to run make %s: %w\n%s", target, err, out)
		}
		return filepath.Join(append([]string{root}, dir...)...), nil
	}
}

var (
	tools  = &lazyDir{env: "KDD_CNI_TOOLS", build: script("control-plane tools", "test", "tools", "build.sh")}
	bins   = &lazyDir{env: "KDD_CNI_BIN", build: makeTarget("build", "bin")}
	rootfs = &lazyDir{env: "KDD_CNI_ROOTFS", build: makeTarget("image-rootfs", "build", "rootfs")}
	calico = &lazyDir{env: "KDD_CNI_CALICO", build: script("Calico", "test", "tools", "calico", "build.sh")}
)

// ToolsDir is the directory holding etcd, kube-apiserver and
// kube-controller-manager: $KDD_CNI_TOOLS, else what test/tools/build.sh
// builds (cached under ~/.cache/kdd-cni).
func ToolsDir() (string, error) { return tools.get() }

// BinDir is the directory holding kdd-cni's binaries and the third-party CNI
// plugins: $KDD_CNI_BIN, else bin/ after `make build`.
func BinDir() (string, error) { return bins.get() }

// RootFS is the image's file tree: $KDD_CNI_ROOTFS, else build/rootfs after
// `make image-rootfs`.
func RootFS() (string, error) { return rootfs.get() }

// CalicoDir holds calico-felix, Calico's own `calico` CNI binary and crds/,
// built from the pinned Calico release: $KDD_CNI_CALICO, else what
// test/tools/calico/build.sh builds (cached under ~/.cache/kdd-cni).
func CalicoDir() (string, error) { return calico.get() }
