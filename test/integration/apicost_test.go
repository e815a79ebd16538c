package integration

import (
	"context"
	"testing"
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
	ctx := context.Background()
	count := func(fn func()) map[string]float64 {
		before, err := cluster.RequestCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fn()
		after, err := cluster.RequestCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return harnessDelta(before, after)
	}
	add := count(func() { e.add(p) })
	del := count(func() { e.del(p) })
	t.Logf("ADD requests: %v; DEL requests: %v", add, del)
	if add["GET nodes"] != 1 || add["PATCH pods/status"] != 1 || total(add) != 2 {
		t.Errorf("ADD made %v, want exactly GET nodes + PATCH pods/status", add)
	}
	if del["PATCH pods/status"] != 1 || total(del) != 1 {
		t.Errorf("DEL made %v, want exactly one PATCH pods/status", del)
	}
}

func total(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}
