package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

func (e *env) journal() []string {
	entries, _ := filepath.Glob(filepath.Join(e.dataDir, "state", "journal", "*.json"))
	return entries
}

// writeKubeconfigVariant copies the CNI kubeconfig with one substitution.
func writeKubeconfigVariant(t *testing.T, from, to string) string {
	b, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), from, to, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// DEL releases the interface and the lease and succeeds whatever the
// datastore says; the annotation clear is journaled and replayed by the
// next invocation.
func TestDelSurvivesDatastoreFailure(t *testing.T) {
	// An identity the apiserver knows but that may do nothing (403).
	ctx := context.Background()
	if _, err := cluster.Admin.CoreV1().ServiceAccounts("kube-system").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "powerless"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	forbidden := filepath.Join(t.TempDir(), "forbidden.kubeconfig")
	if err := cluster.ServiceAccountKubeconfig(ctx, forbidden, "kube-system", "powerless", 600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(kubeconfig)
	token := string(b[strings.Index(string(b), "token: ")+7:])
	token = strings.TrimSpace(strings.SplitN(token, "\n", 2)[0])
	for name, kc := range map[string]string{
		"unreachable":  writeKubeconfigVariant(t, "https://127.0.0.1:6443", "https://127.0.0.1:1"),
		"unauthorized": writeKubeconfigVariant(t, token, "not-a-valid-token"),
		"forbidden":    forbidden,
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, podCIDRs("v4")...)
			p := e.newPod("web", false)
			e.add(p)
			e.extra["kubernetes"] = map[string]any{"kubeconfig": kc}
			e.del(p) // must succeed
			e.assertGone(p, p.IPs())
			if n := len(e.journal()); n != 1 {
				t.Fatalf("journal entries: %d", n)
			}
			if a := e.annotations("web"); a["cni.projectcalico.org/podIP"] == "" {
				t.Fatal("annotations cleared through a failing datastore?")
			}
			// A second DEL (the runtime retrying) is fine too.
			e.del(p)
			// The next invocation with a working datastore replays it.
			delete(e.extra, "kubernetes")
			if r := e.statusOrGC("STATUS", nil); r.Err != nil {
				t.Fatal(r.Err)
			}
			if a := e.annotations("web"); a["cni.projectcalico.org/podIP"] != "" || a["cni.projectcalico.org/containerID"] != p.ContainerID {
				t.Errorf("replay did not clear: %v", a)
			}
			if n := len(e.journal()); n != 0 {
				t.Errorf("journal entries after replay: %d", n)
			}
		})
	}
}

// A replayed clear keeps the containerID guard: it never clears the
// annotations of a newer sandbox.
func TestJournalReplayKeepsGuard(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	down := writeKubeconfigVariant(t, "https://127.0.0.1:6443", "https://127.0.0.1:1")
	// Two sandboxes of the pod come and go during an outage: two entries.
	// (ADDs use another state dir, or they would replay the first entry.)
	journalDir := filepath.Join(e.dataDir, "state")
	for _, p := range []*pod{e.newPod("web", false), e.sandbox("web")} {
		e.extra["state_dir"] = filepath.Join(e.dataDir, "other-state")
		e.add(p)
		e.extra["state_dir"] = journalDir
		e.extra["kubernetes"] = map[string]any{"kubeconfig": down}
		e.del(p)
		delete(e.extra, "kubernetes")
	}
	// The newer sandbox's ADD runs with another state dir, so the old
	// entry is still pending after it.
	e.extra["state_dir"] = filepath.Join(e.dataDir, "other-state")
	newer := e.sandbox("web")
	e.add(newer)
	e.extra["state_dir"] = journalDir
	if n := len(e.journal()); n != 2 {
		t.Fatalf("journal entries: %d", n)
	}
	if r := e.statusOrGC("STATUS", nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	a := e.annotations("web")
	if a["cni.projectcalico.org/containerID"] != newer.ContainerID || a["cni.projectcalico.org/podIP"] != newer.IPs()[0].String()+"/32" {
		t.Errorf("replay of the old sandbox's clear touched the new one: %v", a)
	}
	if n := len(e.journal()); n != 0 {
		t.Errorf("guarded-out entry not forgotten: %d", n)
	}
	e.del(newer)
}

// TestLatePatchOfKilledSandbox reproduces the interleaving: sandbox A's ADD
// is killed while its annotation PATCH is still on its way (held in the
// network, delivered later); the runtime DELs A and starts B, whose ADD
// succeeds; then A's PATCH lands over B's annotations. Once the deferred
// entries are due, a replay must leave B's annotations in place.
func TestLatePatchOfKilledSandbox(t *testing.T) {
	proxy, via := faultProxy(t, 17443)
	e := newEnv(t, podCIDRs("v4")...)
	e.extra["kubernetes"] = map[string]any{"kubeconfig": via}
	e.runtimeAnnotations(nil)
	a := e.newPod("web", false)

	const held = 5 * time.Second // A's PATCH is delivered this long after it was sent
	proxy.Set(harness.Fault{Method: "PATCH", Delay: held, Detach: true})
	c := cniCall(e, a, "ADD", e.conf(), "K8S_POD_NAMESPACE="+e.ns+";K8S_POD_NAME=web")
	cmd := c.Cmd()
	start := time.Now()
	if err := cluster.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // A is waiting for its PATCH
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	proxy.Set(harness.Fault{})

	e.del(a) // the runtime cleans up the failed sandbox
	b := e.sandbox("web")
	e.add(b)
	if time.Since(start) > held-500*time.Millisecond {
		t.Fatalf("B's ADD finished after A's PATCH landed (%s): no interleaving", time.Since(start))
	}
	deadline := start.Add(held + 5*time.Second)
	for e.annotations("web")["cni.projectcalico.org/containerID"] != a.ContainerID {
		if time.Now().After(deadline) {
			t.Fatal("A's late PATCH never landed: no interleaving to test")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(start.Add(held + time.Second))) // the deferred entries are due
	if r := e.statusOrGC("STATUS", nil); r.Err != nil {
		t.Fatal(r.Err)
	}
	want := b.IPs()[0].String() + "/32"
	if got := e.annotations("web"); got["cni.projectcalico.org/containerID"] != b.ContainerID || got["cni.projectcalico.org/podIP"] != want {
		t.Errorf("after the replay the live sandbox's annotations are %v, want containerID %s podIP %s", got, b.ContainerID, want)
	}
	if n := len(e.journal()); n != 0 {
		t.Errorf("journal entries left: %d", n)
	}
	e.del(b)
}
