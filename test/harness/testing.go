package harness

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireRoot skips an integration test when not running as root.
// Under CI=true a skip would hide a suite that never ran: it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if InCI() {
			t.Fatal("this test needs root (network namespaces) and CI=true: a skip would hide it")
		}
		t.Skip("integration test skipped: needs root for network namespaces (run `sudo make test`)")
	}
}

// InCI tells whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// StartT starts a control plane for a test and stops it when the test ends,
// printing the process logs if the test failed.
func StartT(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	RequireRoot(t)
	cp, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control-plane logs:\n%s", cp.Logs(3000))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}

// NewNetNST creates a network namespace removed when the test ends.
func NewNetNST(t testing.TB, role string) *NetNS {
	t.Helper()
	n, err := NewNetNS(role)
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	return n
}

// Run starts cmd inside the node namespace and waits for it. Processes started
// this way are killed if the test process dies.
func (cp *ControlPlane) Run(cmd *exec.Cmd) error {
	if err := cp.launcher.start(cmd, true); err != nil {
		return err
	}
	return cmd.Wait()
}

// StartCmd starts cmd inside the node namespace without waiting.
func (cp *ControlPlane) StartCmd(cmd *exec.Cmd) error { return cp.launcher.start(cmd, true) }

// DoInNode runs fn on a thread inside the node namespace.
func (cp *ControlPlane) DoInNode(fn func() error) error {
	var err error
	cp.launcher.run(func() { err = fn() })
	return err
}

// DialContext opens a connection from inside the node namespace.
func (cp *ControlPlane) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return cp.launcher.dial(ctx, network, addr)
}

// Poll calls check every interval until it returns nil or within passes,
// and returns check's last error (nil once it passed).
func Poll(within, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval)
	}
}

// Eventually is Poll that fails the test, saying what was awaited and
// check's last error; it returns how long it took.
func Eventually(t testing.TB, within, interval time.Duration, what string, check func() error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := Poll(within, interval, check); err != nil {
		t.Fatalf("%s: not within %s: %v", what, within, err)
	}
	return time.Since(start)
}
