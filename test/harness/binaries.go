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

var (
	toolsOnce sync.Once
	toolsDir  string
	toolsErr  error
	binOnce   sync.Once
	binDir    string
	binErr    error
)

// ToolsDir is the directory holding etcd, kube-apiserver and
// kube-controller-manager: $KDD_CNI_TOOLS, else what test/tools/build.sh
// builds (cached under ~/.cache/kdd-cni).
func ToolsDir() (string, error) {
	toolsOnce.Do(func() {
		if d := os.Getenv("KDD_CNI_TOOLS"); d != "" {
			toolsDir = d
			return
		}
		out, err := exec.Command(filepath.Join(RepoRoot(), "test", "tools", "build.sh")).Output()
		if err != nil {
			toolsErr = fmt.Errorf("failed to build control-plane tools: %w", err)
			return
		}
		toolsDir = strings.TrimSpace(string(out))
	})
	return toolsDir, toolsErr
}

// BinDir is the directory holding kdd-cni's binaries and the third-party CNI
// plugins: $KDD_CNI_BIN, else bin/ after `make build`.
func BinDir() (string, error) {
	binOnce.Do(func() {
		if d := os.Getenv("KDD_CNI_BIN"); d != "" {
			binDir = d
			return
		}
		root := RepoRoot()
		cmd := exec.Command("make", "-C", root, "build")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("failed to run make build: %w\n%s", err, out)
			return
		}
		binDir = filepath.Join(root, "bin")
	})
	return binDir, binErr
}

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// RootFS is the image's file tree: $KDD_CNI_ROOTFS, else build/rootfs after
// `make image-rootfs`.
func RootFS() (string, error) {
	rootfsOnce.Do(func() {
		if d := os.Getenv("KDD_CNI_ROOTFS"); d != "" {
			rootfsDir = d
			return
		}
		root := RepoRoot()
		if out, err := exec.Command("make", "-C", root, "image-rootfs").CombinedOutput(); err != nil {
			rootfsErr = fmt.Errorf("failed to run make image-rootfs: %w\n%s", err, out)
			return
		}
		rootfsDir = filepath.Join(root, "build", "rootfs")
	})
	return rootfsDir, rootfsErr
}
