package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// The API requests one ADD and one DEL make, as the apiserver counts them,
// when the runtime passes the pod's annotations (containerd, CRI-O).
// Calico's binary makes 6 per ADD (8 with discovery) and 3 per DEL.
func TestAPIRequestsPerCommand(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	e.runtimeAnnotations(nil)
	p := e.newPod("counted", false)
	add := requestsOf(t, func() { e.add(p) })
	del := requestsOf(t, func() { e.del(p) })
	t.Logf("ADD requests: %v; DEL requests: %v", add, del)
	if want := "GET nodes, PATCH pods/status"; add != want {
		t.Errorf("ADD made %s, want exactly %s", add, want)
	}
	if want := "PATCH pods/status"; del != want {
		t.Errorf("DEL made %s, want exactly %s", del, want)
	}
}

// An ADD's record carries its timeline: when the TLS handshake ended, the
// addresses were allocated, the PATCH was written and answered and the
// veth was set up, as offsets from the configuration read, in the order
// the critical path takes them (the bench's profile reads them).
func TestAddRecordsItsTimeline(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	e.runtimeAnnotations(nil)
	e.publishPodCIDRs()
	p := e.newPod("timed", false)
	e.add(p)
	defer e.del(p)
	recs, skipped, err := nodestate.Dir(e.stateDir()).Records().Peek()
	if err != nil || skipped != 0 {
		t.Fatalf("read the records: %v (%d that do not parse)", err, skipped)
	}
	var add *nodestate.OpRecord
	for i := range recs {
		if recs[i].Command == "ADD" {
			add = &recs[i]
		}
	}
	if add == nil {
		t.Fatalf("no ADD record among %d", len(recs))
	}
	t.Logf("ADD timeline (s): %v, total %.4f", add.At, add.Seconds)
	order := []string{"allocated", "patch-sent", "patch-answered"}
	for _, k := range append(order, "tls-done", "veth-done") {
		if v, ok := add.At[k]; !ok || v <= 0 || v > add.Seconds {
			t.Errorf("timeline event %q: %v (present %v), want within the ADD's %.4f s", k, v, ok, add.Seconds)
		}
	}
	for i := 1; i < len(order); i++ {
		if add.At[order[i-1]] > add.At[order[i]] {
			t.Errorf("%s at %.4f s after %s at %.4f s", order[i-1], add.At[order[i-1]], order[i], add.At[order[i]])
		}
	}
	if add.At["tls-done"] > add.At["patch-sent"] {
		t.Errorf("PATCH sent at %.4f s, before the TLS handshake ended at %.4f s", add.At["patch-sent"], add.At["tls-done"])
	}
}

// With install-cni's sidecar watching the Node (its copy of the podCIDRs
// published under a live lock), ADD makes one request: the PATCH. The
// addresses come from the published podCIDRs. A copy whose watch is gone
// (its lock not held), naming other podCIDRs, is ignored: the Node is read.
func TestAPIRequestsWithWatchedPodCIDRs(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	e.runtimeAnnotations(nil)
	pub, node, _ := e.publishPodCIDRs()
	p := e.newPod("watched", false)
	if got := requestsOf(t, func() { e.add(p) }); got != "PATCH pods/status" {
		t.Errorf("ADD with a live watched copy made %s, want only PATCH pods/status", got)
	}
	e.assertInPodCIDRs(p, node)
	ips := p.IPs()
	e.del(p)
	e.assertGone(p, ips)

	// IPAM fails after the PATCH was opened (at once: there is no GET to
	// share a connection with): the PATCH is aborted, nothing is written.
	f := e.newPod("refused", false)
	f.ExtraArgs = "IP=10.99.0.5"
	if r := e.call("ADD", f, e.conf()); r.Err == nil {
		t.Fatal("ADD of an address outside the podCIDRs succeeded")
	}
	time.Sleep(300 * time.Millisecond) // an aborted PATCH the server applied would show by now
	e.assertNothingAllocated(f, true)

	// The sidecar died: its copy stays, naming podCIDRs the Node no longer
	// has, and nobody holds the lock.
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	stale := `{"node":"` + e.node + `","uid":"gone","cidrs":{"v4":"10.99.0.0/24","v6":"fd99::/64"}}`
	if err := os.WriteFile(filepath.Join(nodestate.Dir(e.stateDir()).PodCIDRs(), e.node+".watched.json"), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	q := e.newPod("unwatched", false)
	if got := requestsOf(t, func() { e.add(q) }); got != "GET nodes, PATCH pods/status" {
		t.Errorf("ADD with a dead watch's copy made %s, want GET nodes + PATCH pods/status", got)
	}
	e.assertInPodCIDRs(q, node) // not the dead watch's copy
	ips = q.IPs()
	e.del(q)
	e.assertGone(q, ips)
}

// requestsOf lists, sorted, every request the CNI identity made while fn
// ran, resource or not, as the apiserver's audit log recorded them.
func requestsOf(t *testing.T, fn func()) string {
	t.Helper()
	mark := cluster.AuditMark()
	fn()
	reqs, err := cluster.AuditedSince(mark, harness.CNIUser)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(reqs)
	return strings.Join(reqs, ", ")
}
