package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestControlPlaneAndCNIIdentity proves the control plane is real (objects
// persist, defaults apply, RBAC is enforced) and that the CNI identity can do
// exactly what the plugin needs.
func TestControlPlaneAndCNIIdentity(t *testing.T) {
	cp := StartT(t, Options{})
	ctx := context.Background()

	// A Node created with podCIDR only gets podCIDRs defaulted by the server.
	n, err := cp.Admin.CoreV1().Nodes().Create(ctx, nodeWithPodCIDR("node-a", "10.244.7.0/24"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Spec.PodCIDRs; len(got) != 1 || got[0] != "10.244.7.0/24" {
		t.Fatalf("podCIDRs not defaulted by the apiserver: %v", got)
	}
	if _, err := cp.CreatePod(ctx, "ns1", "pod1", "node-a"); err != nil {
		t.Fatal(err)
	}

	kc := filepath.Join(t.TempDir(), "cni.kubeconfig")
	if err := cp.CNIKubeconfig(ctx, kc, 600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(kc); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig mode: %v %v", fi, err)
	}
	cni, _, err := cp.ClientFor(kc)
	if err != nil {
		t.Fatal(err)
	}
	// Allowed.
	if _, err := cni.CoreV1().Pods("ns1").Get(ctx, "pod1", metav1.GetOptions{}); err != nil {
		t.Errorf("get pod as CNI: %v", err)
	}
	if _, err := cni.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{}); err != nil {
		t.Errorf("get node as CNI: %v", err)
	}
	if _, err := cni.CoreV1().Namespaces().Get(ctx, "ns1", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("get namespace as CNI (the plugin never reads namespaces): %v, want forbidden", err)
	}
	patch := []byte(`{"metadata":{"annotations":{"kdd-cni.test/x":"1"}}}`)
	if _, err := cni.CoreV1().Pods("ns1").Patch(ctx, "pod1", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("patch pods/status as CNI: %v", err)
	}
	p, err := cp.Admin.CoreV1().Pods("ns1").Get(ctx, "pod1", metav1.GetOptions{})
	if err != nil || p.Annotations["kdd-cni.test/x"] != "1" {
		t.Errorf("status patch did not persist: %v %v", p.Annotations, err)
	}
	// Denied.
	denied := map[string]error{}
	_, denied["list pods"] = cni.CoreV1().Pods("ns1").List(ctx, metav1.ListOptions{})
	_, denied["patch pods"] = cni.CoreV1().Pods("ns1").Patch(ctx, "pod1", types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	denied["delete pods"] = cni.CoreV1().Pods("ns1").Delete(ctx, "pod1", metav1.DeleteOptions{})
	_, denied["list secrets"] = cni.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	_, denied["patch nodes"] = cni.CoreV1().Nodes().Patch(ctx, "node-a", types.StrategicMergePatchType, []byte(`{}`), metav1.PatchOptions{})
	for what, err := range denied {
		if !apierrors.IsForbidden(err) {
			t.Errorf("%s as CNI: want 403 Forbidden, got %v", what, err)
		}
	}
}

func TestControllerManagerAllocatesPodCIDR(t *testing.T) {
	cp := StartT(t, Options{ControllerManager: true, ClusterCIDR: "10.88.0.0/16"})
	ctx := context.Background()
	if _, err := cp.CreateNode(ctx, "node-b"); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, 100*time.Millisecond, "a podCIDR from nodeipam", func() error {
		n, err := cp.Admin.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
		if err == nil && (len(n.Spec.PodCIDRs) != 1 || !strings.HasPrefix(n.Spec.PodCIDRs[0], "10.88.")) {
			err = fmt.Errorf("podCIDRs %v", n.Spec.PodCIDRs)
		}
		return err
	})
}

// childState is what a child test process reports about its control plane.
type childState struct {
	PIDs map[string]int
	Dir  string
	NS   string
}

// TestHarnessChild is run only as a child of TestNothingLeftBehind.
func TestHarnessChild(t *testing.T) {
	mode := os.Getenv("KDD_HARNESS_CHILD")
	if mode == "" {
		t.Skip("helper for TestNothingLeftBehind")
	}
	cp := StartT(t, Options{})
	b, _ := json.Marshal(childState{PIDs: cp.PIDs(), Dir: cp.Dir, NS: cp.Node.Path})
	if err := os.WriteFile(os.Getenv("KDD_HARNESS_STATE"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "fail":
		t.Fatal("failing on purpose: cleanup must still run")
	case "hang":
		time.Sleep(time.Hour) // the parent kills us with SIGKILL
	}
}

// TestNothingLeftBehind runs a control plane in a child test process that
// passes, fails, or is killed with SIGKILL, and checks that no process,
// namespace or directory of it survives.
func TestNothingLeftBehind(t *testing.T) {
	RequireRoot(t)
	for _, mode := range []string{"pass", "fail", "sigkill"} {
		t.Run(mode, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state.json")
			childMode := mode
			if mode == "sigkill" {
				childMode = "hang"
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestHarnessChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "KDD_HARNESS_CHILD="+childMode, "KDD_HARNESS_STATE="+state)
			out := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var st childState
			if mode == "sigkill" {
				err := Poll(2*time.Minute, 50*time.Millisecond, func() error { return readState(state, &st) })
				_ = cmd.Process.Kill()
				if err != nil {
					t.Fatalf("child never reported its state: %v\n%s", err, out)
				}
			}
			err := cmd.Wait()
			if mode == "pass" && err != nil {
				t.Fatalf("child failed: %v\n%s", err, out)
			}
			if mode != "pass" && err == nil {
				t.Fatalf("child should have failed:\n%s", out)
			}
			if err := readState(state, &st); err != nil {
				t.Fatalf("read child state: %v\n%s", err, out)
			}
			if len(st.PIDs) < 2 {
				t.Fatalf("child reported no processes: %+v", st)
			}
			// Processes die with their parent even without cleanup (Pdeathsig).
			Eventually(t, 20*time.Second, 50*time.Millisecond, "the child's processes gone", func() error {
				for name, pid := range st.PIDs {
					if syscall.Kill(pid, 0) == nil {
						return fmt.Errorf("%s (pid %d) still running after the child exited", name, pid)
					}
				}
				return nil
			})
			if mode == "sigkill" {
				// Nothing could clean up: the next harness start sweeps it.
				sweepStale()
			}
			for _, p := range []string{st.Dir, st.NS} {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind (stat: %v)", p, err)
				}
			}
		})
	}
}

func readState(path string, st *childState) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, st)
}

func nodeWithPodCIDR(name, cidr string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Spec.PodCIDR = cidr
	return n
}

// TestRootOnlyTestsFailUnderCI: run as an unprivileged user, a root-only
// test skips on a developer's machine but fails under CI=true, so a CI run
// can never pass with the real-parts suites silently skipped.
func TestRootOnlyTestsFailUnderCI(t *testing.T) {
	RequireRoot(t)
	dir, err := os.MkdirTemp("", "kddcni-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "harness.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(ci string) (string, error) {
		cmd := exec.Command(bin, "-test.run", "^TestControlPlaneAndCNIIdentity$", "-test.v")
		cmd.Env = []string{"CI=" + ci, "HOME=" + dir}
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("false"); err != nil || !strings.Contains(out, "SKIP") {
		t.Errorf("without CI the root-only test must skip: %v\n%s", err, out)
	}
	if out, err := run("true"); err == nil || !strings.Contains(out, "a skip would hide it") {
		t.Errorf("under CI=true the root-only test must fail: %v\n%s", err, out)
	}
}
