package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/health"
	"github.com/kdd-cni/kdd-cni/internal/invocation"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// wantUnready runs STATUS and wants error 50 whose message names each
// reason in want, and nothing else (not those in notWant), and whose
// details point to kddctl status without repeating them.
func wantUnready(t *testing.T, e *env, want []string, notWant ...string) {
	t.Helper()
	ce := cniErr(t, e.statusOrGC("STATUS", nil))
	if ce.Code != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS code %d %q, want 50", ce.Code, ce.Msg)
	}
	for _, w := range want {
		if !strings.Contains(ce.Msg, w) || strings.Contains(ce.Details, w) {
			t.Errorf("STATUS does not say %q:\nmsg: %s\ndetails: %s", w, ce.Msg, ce.Details)
		}
	}
	for _, w := range notWant {
		if strings.Contains(ce.Msg, w) {
			t.Errorf("STATUS says %q, which does not hold: %s", w, ce.Msg)
		}
	}
	if reasons := strings.Count(ce.Msg, "; ") + 1; reasons != len(want) {
		t.Errorf("STATUS message holds %d reasons, want %d: %q", reasons, len(want), ce.Msg)
	}
	if ce.Details != invocation.UnreadyDetails {
		t.Errorf("STATUS details %q, want %q", ce.Details, invocation.UnreadyDetails)
	}
}

// forgedJWT is a token shaped like a service-account token with the given
// expiry, signed by nobody.
func forgedJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"x"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"exp":%d,"sub":"system:serviceaccount:kube-system:kdd-cni-plugin"}`, exp.Unix()))) + ".c2ln"
}

// Every reason STATUS gives, one at a time, against the real API server.
func TestStatusReasons(t *testing.T) {
	ctx := context.Background()
	kubeconfigIn := func(e *env, name string) string { return filepath.Join(e.dataDir, name+".kubeconfig") }
	useKubeconfig := func(e *env, path string) {
		e.extra["kubernetes"] = map[string]any{"kubeconfig": path}
	}

	t.Run("token expiring within 10 minutes", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		kc := kubeconfigIn(e, "short")
		if err := cluster.ServiceAccountKubeconfig(ctx, kc, harness.CNINamespace, harness.CNIServiceAccount, 600); err != nil {
			t.Fatal(err)
		}
		useKubeconfig(e, kc)
		wantUnready(t, e, []string{"token: token expires in"}, "identity")
	})

	t.Run("token expired", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		kc := kubeconfigIn(e, "expired")
		if err := cluster.TokenKubeconfig(kc, forgedJWT(time.Now().Add(-time.Hour))); err != nil {
			t.Fatal(err)
		}
		useKubeconfig(e, kc)
		// The API server refuses it too: two reasons, each on its own.
		wantUnready(t, e, []string{"token: token expired at", "identity: identity not accepted"})
	})

	t.Run("identity forbidden", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody", Namespace: e.ns}}
		if _, err := cluster.Admin.CoreV1().ServiceAccounts(e.ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kc := kubeconfigIn(e, "nobody")
		if err := cluster.ServiceAccountKubeconfig(ctx, kc, e.ns, "nobody", 3600); err != nil {
			t.Fatal(err)
		}
		useKubeconfig(e, kc)
		wantUnready(t, e, []string{"identity: identity forbidden to read node"}, "token:")
	})

	t.Run("datastore unreachable", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		e.extra["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
		wantUnready(t, e, []string{"datastore: datastore unreachable"})
	})

	t.Run("no podCIDR for a configured family", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		delete(e.ipam, "subnet")
		e.ipam["ranges"] = rangesFor("dual")
		wantUnready(t, e, []string{"podCIDR: node " + fmt.Sprintf("%q", e.node) + " has no IPv6 podCIDR"})
	})

	t.Run("IP pool exhausted blocks ADD, not DEL", func(t *testing.T) {
		n := seq.Add(1) % 256
		e := newEnv(t, fmt.Sprintf("10.210.%d.0/30", n)) // one usable address
		if r := e.statusOrGC("STATUS", nil); r.Err != nil {
			t.Fatalf("STATUS with a free address: %v", r.Err)
		}
		p := e.newPod("only", false)
		e.add(p)
		wantUnready(t, e, []string{fmt.Sprintf("ipam: IP pool exhausted: 1 of 1 usable IPv4 addresses of 10.210.%d.0/30 in use", n)})
		if r := e.call("DEL", p, e.conf()); r.Err != nil {
			t.Fatalf("DEL while the pool is exhausted: %v", r.Err)
		}
		if r := e.statusOrGC("STATUS", nil); r.Err != nil {
			t.Errorf("STATUS after the DEL freed the address: %v", r.Err)
		}
	})

	t.Run("journal backlog over the limit", func(t *testing.T) {
		e := newEnv(t, podCIDRs("v4")...)
		dir := nodestate.Dir(filepath.Join(e.dataDir, "state")).Journal()
		later := time.Now().Add(time.Hour) // not due: STATUS's replay leaves them
		for i := range 101 {
			if err := dir.Write(nodestate.Entry{Namespace: e.ns, Pod: fmt.Sprintf("p%d", i), ContainerID: fmt.Sprintf("c%d", i),
				Recorded: time.Now(), Reason: "test", NotBefore: later}); err != nil {
				t.Fatal(err)
			}
		}
		wantUnready(t, e, []string{"journal: 101 annotation clears pending (limit 100)"})
		if err := dir.Forget(nodestate.Entry{Namespace: e.ns, Pod: "p0", ContainerID: "c0"}); err != nil {
			t.Fatal(err)
		}
		if r := e.statusOrGC("STATUS", nil); r.Err != nil {
			t.Errorf("STATUS with 100 pending: %v", r.Err)
		}
	})
}

// STATUS, which containerd 2.x asks every 5 s, reuses the API server's
// last good answer for health.VerifiedFor: counted from the audit log. A
// new token, a failure and an aged answer each make it ask again.
func TestStatusReusesAGoodAnswer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, podCIDRs("v4")...)
	status := func(t *testing.T, wantOK bool, want string) {
		t.Helper()
		var r cniResult
		got := requestsOf(t, func() { r = e.statusOrGC("STATUS", nil) })
		if (r.Err == nil) != wantOK || got != want {
			t.Errorf("STATUS: err %v, requests %q; want ok %v, requests %q", r.Err, got, wantOK, want)
		}
	}
	status(t, true, "GET nodes")
	for range 3 {
		status(t, true, "") // the answer just kept
	}

	// A new token (install-cni re-minted it): asked again.
	kc := filepath.Join(e.dataDir, "fresh.kubeconfig")
	if err := cluster.ServiceAccountKubeconfig(ctx, kc, harness.CNINamespace, harness.CNIServiceAccount, 3600); err != nil {
		t.Fatal(err)
	}
	e.extra["kubernetes"] = map[string]any{"kubeconfig": kc}
	status(t, true, "GET nodes")
	status(t, true, "")

	// An answer older than VerifiedFor is not reused (its boot-clock stamp
	// moved back rather than waiting).
	file := filepath.Join(e.dataDir, "state", "status-verified")
	var v map[string]any
	b, err := os.ReadFile(file)
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil {
		t.Fatalf("the kept answer: %v", err)
	}
	if strings.Contains(string(b), harness.CNIServiceAccount) || bytes.Contains(b, []byte("eyJ")) {
		t.Errorf("the kept answer holds credentials: %s", b)
	}
	v["at"] = v["at"].(float64) - float64(health.VerifiedFor) - float64(time.Second)
	b, _ = json.Marshal(v)
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	status(t, true, "GET nodes")

	// A failure is never kept, and drops the good answer: the same good
	// identity afterwards is asked again.
	e.extra["kubernetes"] = map[string]any{"kubeconfig": kc, "k8s_api_root": "https://127.0.0.1:1"}
	status(t, false, "")
	status(t, false, "")
	e.extra["kubernetes"] = map[string]any{"kubeconfig": kc}
	status(t, true, "GET nodes")
	status(t, true, "")
}
