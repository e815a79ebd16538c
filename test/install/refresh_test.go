package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// sidecar is install-cni running with SLEEP=true.
type sidecar struct {
	h       *host
	out     *syncBuffer
	done    chan error
	pid     int
	stopped bool
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startSidecar(t *testing.T, h *host) *sidecar {
	h.env["SLEEP"] = "true"
	cmd := h.cmd()
	s := &sidecar{h: h, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := suite.CP.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	s.pid = cmd.Process.Pid
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if !s.stopped {
			s.stop(t, syscall.SIGTERM)
		}
		if t.Failed() {
			t.Logf("sidecar log:\n%s", s.out)
		}
	})
	return s
}

// stop ends the sidecar with sig; SIGTERM must end it cleanly.
func (s *sidecar) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	s.stopped = true
	_ = syscall.Kill(s.pid, sig)
	select {
	case err := <-s.done:
		if err != nil && sig == syscall.SIGTERM {
			t.Errorf("sidecar exit on SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(s.pid, syscall.SIGKILL)
		<-s.done
		t.Errorf("sidecar ignored %v", sig)
	}
}

// token reads the CNI kubeconfig's token ("" while absent).
func (h *host) token() string {
	b, err := os.ReadFile(h.path("etc/cni/net.d/calico-kubeconfig"))
	if err != nil {
		return ""
	}
	cfg, err := clientcmd.Load(b)
	if err != nil || cfg.AuthInfos["kdd-cni"] == nil {
		return "invalid"
	}
	return cfg.AuthInfos["kdd-cni"].Token
}

func waitToken(t *testing.T, h *host, old string, within time.Duration) string {
	t.Helper()
	var tok string
	harness.Eventually(t, within, 50*time.Millisecond, "a refreshed token", func() error {
		if tok = h.token(); tok == "" || tok == old {
			return errors.New("the same token")
		}
		return nil
	})
	if tok == "invalid" {
		t.Fatal("kubeconfig unreadable")
	}
	return tok
}

func tokenWorks(t *testing.T, h *host) {
	t.Helper()
	c, _, err := suite.CP.ClientFor(h.path("etc/cni/net.d/calico-kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{}); err != nil {
		t.Errorf("refreshed token does not work: %v", err)
	}
}

// Scheduled refresh (interval override, as a stand-in for "a quarter of the
// life left": the API's minimum token life is 10 minutes).
func TestTokenRefreshScheduled(t *testing.T) {
	h := newHost(t)
	h.env["CNI_TOKEN_TTL"] = "10m"
	h.env["CNI_TOKEN_REFRESH_INTERVAL"] = "2s"
	startSidecar(t, h)
	t1 := waitToken(t, h, "", 15*time.Second)
	t2 := waitToken(t, h, t1, 10*time.Second)
	t3 := waitToken(t, h, t2, 10*time.Second)
	if t1 == t2 || t2 == t3 {
		t.Fatal("tokens not re-minted")
	}
	tokenWorks(t, h)
}

// A change of install-cni's own service-account token triggers an immediate
// refresh; a failing refresh (RBAC revoked) keeps the working kubeconfig and
// recovers with backoff once the permission is back.
func TestTokenRefreshOnOwnTokenChangeAndFailure(t *testing.T) {
	h := newHost(t)
	h.env["CNI_TOKEN_TTL"] = "10m" // next scheduled refresh is minutes away
	if err := os.WriteFile(h.env["SERVICEACCOUNT_TOKEN_FILE"], []byte("generation-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, h)
	// Rotate the moment the first kubeconfig lands, before the sidecar's
	// loop has started: a rotation after the mint must never be missed.
	harness.Eventually(t, 15*time.Second, time.Millisecond, "the first kubeconfig", func() error {
		if h.token() == "" {
			return errors.New("none yet")
		}
		return nil
	})
	if err := os.WriteFile(h.env["SERVICEACCOUNT_TOKEN_FILE"], []byte("generation-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	t1 := h.token()
	t2 := waitToken(t, h, t1, 20*time.Second) // at the next poll; generous for a loaded machine
	tokenWorks(t, h)

	// Revoke install-cni's right to mint, then rotate its token again.
	ctx := context.Background()
	rb := suite.CP.Admin.RbacV1().RoleBindings("kube-system")
	if err := rb.Delete(ctx, "kdd-cni-token-minter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	restored := false
	t.Cleanup(func() {
		if !restored {
			_ = suite.CP.ApplyManifest(ctx, harness.Manifest("rbac-install.yaml"), false)
		}
	})
	if err := os.WriteFile(h.env["SERVICEACCOUNT_TOKEN_FILE"], []byte("generation-3"), 0o600); err != nil {
		t.Fatal(err)
	}
	logged(t, s, "failed to refresh the CNI token", 10*time.Second)
	if h.token() != t2 {
		t.Fatal("a failed refresh changed the kubeconfig")
	}
	tokenWorks(t, h) // the previous token still serves the plugin

	if err := suite.CP.ApplyManifest(ctx, harness.Manifest("rbac-install.yaml"), false); err != nil {
		t.Fatal(err)
	}
	restored = true
	waitToken(t, h, t2, 30*time.Second) // the backoff retry succeeds
	tokenWorks(t, h)
}

// The sidecar replays annotation clears a DEL journaled while the datastore
// was down, as the CNI identity.
func TestSidecarReplaysJournal(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	if _, err := suite.CP.CreatePod(ctx, "journal", "web", node); err != nil {
		t.Fatal(err)
	}
	ann := `{"metadata":{"annotations":{"cni.projectcalico.org/podIP":"10.230.0.9/32","cni.projectcalico.org/podIPs":"10.230.0.9/32","cni.projectcalico.org/containerID":"sandbox-1"}}}`
	if _, err := suite.CP.Admin.CoreV1().Pods("journal").Patch(ctx, "web", types.StrategicMergePatchType, []byte(ann), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := h.path("var/lib/kdd-cni/journal")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	entry := `{"namespace":"journal","pod":"web","containerID":"sandbox-1","recorded":"2026-01-01T00:00:00Z","reason":"test"}`
	if err := os.WriteFile(filepath.Join(dir, "journal_web_sandbox-1.json"), []byte(entry), 0o600); err != nil {
		t.Fatal(err)
	}
	startSidecar(t, h)
	harness.Eventually(t, 15*time.Second, 100*time.Millisecond, "the sidecar's replay of the journal", func() error {
		p, err := suite.CP.Admin.CoreV1().Pods("journal").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && p.Annotations["cni.projectcalico.org/podIP"] != "" {
			err = fmt.Errorf("annotations %v", p.Annotations)
		}
		return err
	})
	if left, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(left) != 0 {
		t.Errorf("journal entries left: %v", left)
	}
}

// logged waits until the sidecar's log holds text.
func logged(t *testing.T, s *sidecar, text string, within time.Duration) {
	t.Helper()
	harness.Eventually(t, within, 100*time.Millisecond, "the sidecar's log saying "+strconv.Quote(text), func() error {
		if !strings.Contains(s.out.String(), text) {
			return errors.New("not yet")
		}
		return nil
	})
}
