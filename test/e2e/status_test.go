package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/health"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// statusDecidesReadiness: on a runtime that asks CNI STATUS (containerd
// 2.x, conflist 1.1.0), the CNI identity is revoked (its ServiceAccount
// deleted and re-created: every token minted for it is refused). STATUS
// fails, containerd reports NetworkReady=false with our reason, the kubelet
// turns the Node NotReady with that reason in its Ready condition (what
// `kubectl describe node` prints) and starts no sandbox for a new pod.
// install-cni then mints a new token, as the DaemonSet's init container
// does; STATUS passes, the Node turns Ready and the pod starts, with
// neither containerd nor the kubelet restarted.
func (n *node) statusDecidesReadiness(t *testing.T) {
	ctx := context.Background()
	tools := requireTools(t, "e2e", "kubectl")
	containerdPID, kubeletPID := n.containerd.PID(), n.kubelet.PID()

	// What STATUS costs while the node is idle: how often containerd asks
	// it (the plugin's own records), and how often it asks the API server
	// (the audit log): at most once per health.VerifiedFor.
	// Longer than VerifiedFor by two kubelet polls: the answer kept
	// before the window expires inside it, and a STATUS follows.
	const window = health.VerifiedFor + 10*time.Second
	callsBefore, sentBefore := n.statusRecords(t)
	mark := cp.AuditMark()
	time.Sleep(window)
	callsAfter, sentAfter := n.statusRecords(t)
	reqs, err := cp.AuditedSince(mark, harness.CNIUser)
	if err != nil {
		t.Fatal(err)
	}
	calls, sent := callsAfter-callsBefore, sentAfter-sentBefore
	t.Logf("idle node, %s, %s: containerd asked STATUS %d times; the CNI identity sent %d requests %v", n.runtime.name, window, calls, len(reqs), reqs)
	if calls < 4 {
		t.Errorf("containerd asked STATUS %d times in %s, want it every few seconds", calls, window)
	}
	if max := int(window/health.VerifiedFor) + 1; len(reqs) == 0 || len(reqs) > max || sent != len(reqs) {
		t.Errorf("%d requests audited in %s, %d recorded by STATUS: want 1 to %d, all STATUS's: %v", len(reqs), window, sent, max, reqs)
	}

	if err := cp.Admin.CoreV1().ServiceAccounts("kube-system").Delete(ctx, "kdd-cni-plugin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	var cond corev1.NodeCondition
	// Within health.VerifiedFor and the kubelet's next two polls.
	n.waitFor("the Node NotReady, saying why", 90*time.Second, func() bool {
		cond = n.readyCondition()
		return cond.Status == corev1.ConditionFalse
	})
	t.Logf("%s after the revocation: Ready=%s reason %s: %s", time.Since(revoked).Round(time.Second), cond.Status, cond.Reason, cond.Message)
	for _, want := range []string{"NetworkReady=false", "NetworkPluginNotReady", "kdd-cni is not ready: identity: identity not accepted", "(401)", "kddctl status"} {
		if strings.Count(cond.Message, want) != 1 {
			t.Errorf("Ready condition's message holds %q %d times, want once: %s", want, strings.Count(cond.Message, want), cond.Message)
		}
	}
	// What the operator reads: the pinned kubectl's describe.
	var out bytes.Buffer
	kubectl := exec.Command(filepath.Join(tools, "kubectl"), "--kubeconfig", cp.AdminKubeconfig, "describe", "node", n.name)
	kubectl.Stdout, kubectl.Stderr = &out, &out
	if err := cp.Run(kubectl); err != nil { // where the API server's address is
		t.Fatalf("kubectl describe node: %v\n%s", err, out.String())
	}
	if line := conditionLine(out.String(), "Ready"); !strings.Contains(line, "False") || !strings.Contains(line, "kdd-cni is not ready: identity: identity not accepted") {
		t.Errorf("kubectl describe node %s does not say why it is not ready:\n%s", n.name, out.String())
	} else {
		t.Logf("kubectl describe node %s:\n%s", n.name, line)
	}

	// A pod bound to the node gets no sandbox while the network is not
	// ready: the kubelet says so on the pod, and no address is leased.
	const podName = "status-wait"
	if _, err := cp.Admin.CoreV1().Pods(namespace).Create(ctx, pod(podName, n.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the kubelet's NetworkNotReady event on the waiting pod", 60*time.Second, func() bool {
		evs, err := cp.Admin.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + podName})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "NetworkNotReady" {
				t.Logf("pod %s: %s: %s", podName, e.Reason, e.Message)
				return true
			}
		}
		return false
	})
	if owners := n.leaseOwners(); len(owners) != 0 {
		t.Errorf("addresses leased while the network was not ready: %v", owners)
	}
	if p := getPod(t, podName); ready(p) || p.Status.PodIP != "" {
		t.Errorf("pod %s started while the network was not ready: ready %v, IP %q", podName, ready(p), p.Status.PodIP)
	}

	// Recovery: a new token (the ServiceAccount back, install-cni mints).
	n.installCNI(nil)
	recovered := time.Now()
	n.waitReady()
	t.Logf("Node Ready %s after install-cni re-minted the token", time.Since(recovered).Round(time.Second))
	n.waitFor("the waiting pod Ready", 90*time.Second, func() bool { return ready(getPod(t, podName)) })
	n.assertPodNetworks(t, []string{podName})
	if n.containerd.PID() != containerdPID || n.kubelet.PID() != kubeletPID || !n.containerd.Running() || !n.kubelet.Running() {
		t.Errorf("containerd or the kubelet restarted: pids %d→%d, %d→%d", containerdPID, n.containerd.PID(), kubeletPID, n.kubelet.PID())
	}
	n.deletePods([]string{podName})
}

// statusRecords counts, from the plugin's per-invocation records on the
// node (no sidecar drains them here), the STATUS invocations so far and
// the API requests they sent.
func (n *node) statusRecords(t *testing.T) (calls, requests int) {
	t.Helper()
	recs, skipped, err := (&netconf.NetConf{StateDir: n.stateDir}).State().Records().Peek()
	if err != nil || skipped != 0 {
		t.Fatalf("the plugin's records: %v (%d that do not parse)", err, skipped)
	}
	for _, r := range recs {
		if r.Command == "STATUS" {
			calls++
			for _, c := range r.API {
				requests += c
			}
		}
	}
	return calls, requests
}

// conditionLine is the line of `kubectl describe node`'s Conditions table
// for the condition typ.
func conditionLine(describe, typ string) string {
	in := false
	for _, l := range strings.Split(describe, "\n") {
		switch {
		case strings.HasPrefix(l, "Conditions:"):
			in = true
		case in && !strings.HasPrefix(l, " "):
			return ""
		case in && strings.HasPrefix(strings.TrimSpace(l), typ+" "):
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// readyCondition is the Node's Ready condition.
func (n *node) readyCondition() corev1.NodeCondition {
	nd, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), n.name, metav1.GetOptions{})
	if err != nil {
		return corev1.NodeCondition{}
	}
	for _, c := range nd.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c
		}
	}
	return corev1.NodeCondition{}
}
