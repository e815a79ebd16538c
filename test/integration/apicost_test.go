package integration

import (
	"slices"
	"strings"
	"testing"

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
