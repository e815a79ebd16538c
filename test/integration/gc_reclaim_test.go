package integration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// The keys install-cni's leak reclaimer passes to GC: the runtime's
// sandboxes (all their interfaces valid), a grace period (mark and sweep),
// and the pod lock a host veth is removed under.
func TestGCReclaimerKeys(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	pods := map[string]*pod{}
	for _, n := range []string{"live", "busy", "gone"} {
		pods[n] = e.newPod(n, false)
		e.add(pods[n])
	}
	none := []types.GCAttachment{}

	// A first pass with a grace period only marks: nothing is collected,
	// however old the leases look (the wall clock stepped an hour ahead).
	old := time.Now().Add(-time.Hour)
	for ip := range e.leases() {
		if err := os.Chtimes(filepath.Join(e.dataDir, networkName, ip), old, old); err != nil {
			t.Fatal(err)
		}
	}
	gc := func(body map[string]any) {
		t.Helper()
		if r := e.statusOrGC("GC", body); r.Err != nil {
			t.Fatalf("GC: %v", r.Err)
		}
	}
	gc(map[string]any{"cni.dev/valid-attachments": none, "kdd-cni.dev/gc-grace-seconds": 1})
	if n := len(e.leases()); n != 3 {
		t.Fatalf("GC within the grace period released leases: %d left", n)
	}

	// The pod "busy" has an invocation in flight (its lock is held): its
	// host veth stays, its lease goes; "live" is a runtime sandbox with an
	// interface the list does not name.
	lock, err := nodestate.Dir(filepath.Join(e.dataDir, "state")).Locks().Acquire(context.Background(), pods["busy"].HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a pass a grace period after the marks
	gc(map[string]any{"cni.dev/valid-attachments": none, "kdd-cni.dev/gc-grace-seconds": 1,
		"kdd-cni.dev/valid-sandboxes": []string{pods["live"].ContainerID}})
	owners := map[string]bool{}
	for _, o := range e.leases() {
		owners[o] = true
	}
	if !owners[pods["live"].ContainerID] || len(owners) != 1 {
		t.Errorf("leases after GC: %v, want only live's", owners)
	}
	if !linkExists(t, pods["live"].HostVeth) || !linkExists(t, pods["busy"].HostVeth) {
		t.Error("GC removed the live sandbox's host veth or one under its pod's lock")
	}
	if linkExists(t, pods["gone"].HostVeth) {
		t.Error("GC left the forgotten sandbox's host veth")
	}
	lock.Release()
	gc(map[string]any{"cni.dev/valid-attachments": none, "kdd-cni.dev/valid-sandboxes": []string{pods["live"].ContainerID}})
	if linkExists(t, pods["busy"].HostVeth) {
		t.Error("GC left the host veth once its lock was free")
	}
	e.del(pods["live"])
}
