package nodestate

import (
	"github.com/kdd-cni/kdd-cni/internal/podcidr"

	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/internal/boottime"
)

func TestWatchedNeedsALiveLock(t *testing.T) {
	dir := t.TempDir()
	const node = "n1"
	c := podcidr.NodeCIDRs{Node: node, UID: "u1", CIDRs: podcidr.CIDRs{V4: "10.1.0.0/24"}}
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("watched with nothing published")
	}
	// A copy a dead sidecar left behind (no lock held) is not trusted.
	if err := os.MkdirAll(filepath.Join(dir, "podcidrs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(watchedPath(dir, node), []byte(`{"node":"n1","uid":"old","cidrs":{"v4":"10.9.0.0/24"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(watchLockPath(dir, node), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("trusted a copy without a live watch")
	}
	p, err := NewPodCIDRPublisher(dir, node)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(watchedPath(dir, node)); !os.IsNotExist(err) {
		t.Fatalf("a new publisher kept the dead one's copy: %v", err)
	}
	if err := p.Publish(c); err != nil {
		t.Fatal(err)
	}
	if got, ok := WatchedPodCIDRs(dir, node); !ok || got != c {
		t.Fatalf("Watched = %+v, %v; want %+v", got, ok, c)
	}
	if _, ok := WatchedPodCIDRs(dir, "other-node"); ok {
		t.Fatal("watched for another node")
	}
	c2 := podcidr.NodeCIDRs{Node: node, UID: "u2", CIDRs: podcidr.CIDRs{V4: "10.2.0.0/24", V6: "fd00:2::/64"}}
	if err := p.Publish(c2); err != nil {
		t.Fatal(err)
	}
	if got, ok := WatchedPodCIDRs(dir, node); !ok || got != c2 {
		t.Fatalf("after a change Watched = %+v, %v; want %+v", got, ok, c2)
	}
	// Node deleted: withdrawn while the watch (lock) goes on.
	if err := p.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("watched after Withdraw")
	}
	if err := p.Publish(c); err != nil {
		t.Fatal(err)
	}
	// A second sidecar cannot publish while the first holds the lock.
	p2 := &Publisher{stateDir: dir, node: node}
	if err := p2.Publish(c2); err == nil || !strings.Contains(err.Error(), "another sidecar") {
		t.Fatalf("second publisher: %v", err)
	}
	if got, _ := WatchedPodCIDRs(dir, node); got != c {
		t.Fatalf("the second publisher changed the copy: %+v", got)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("watched after Close")
	}
	if _, err := os.Stat(watchedPath(dir, node)); !os.IsNotExist(err) {
		t.Fatalf("Close left the copy: %v", err)
	}
	// The lock is free again: nobody holds it.
	fd, err := unix.Open(watchLockPath(dir, node), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("lock still held after Close: %v", err)
	}
}

// A copy that does not decode, or names another node, is not trusted.
func TestWatchedRejectsBadCopies(t *testing.T) {
	dir := t.TempDir()
	p, err := NewPodCIDRPublisher(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(podcidr.NodeCIDRs{Node: "n1", UID: "u", CIDRs: podcidr.CIDRs{V4: "10.1.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{`, `{"node":"n2","uid":"u","cidrs":{"v4":"10.1.0.0/24"}}`, `{"node":"n1","uid":"","cidrs":{"v4":"10.1.0.0/24"}}`, `{"node":"n1","uid":"u","cidrs":{}}`} {
		if err := os.WriteFile(watchedPath(dir, "n1"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if c, ok := WatchedPodCIDRs(dir, "n1"); ok {
			t.Errorf("trusted %s: %+v", bad, c)
		}
	}
}

// A live sidecar that stopped confirming its copy (a stalled watch, a
// stopped process) is trusted for PodCIDRMaxAge only; its Node read withdraws a
// copy that differs from the Node.
func TestWatchedCopyFreshness(t *testing.T) {
	dir := t.TempDir()
	const node = "n1"
	c := podcidr.NodeCIDRs{Node: node, UID: "u1", CIDRs: podcidr.CIDRs{V4: "10.1.0.0/24"}}
	p, err := NewPodCIDRPublisher(dir, node)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Publish(c); err != nil {
		t.Fatal(err)
	}
	age := func(d time.Duration) {
		t.Helper()
		now, _ := boottime.Now()
		b, _ := json.Marshal(watchedCopy{NodeCIDRs: c, ConfirmedAt: int64(now - d)})
		if err := os.WriteFile(watchedPath(dir, node), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	age(PodCIDRMaxAge + time.Second)
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("trusted a copy not confirmed for longer than PodCIDRMaxAge")
	}
	if err := p.Touch(); err != nil {
		t.Fatal(err)
	}
	if got, ok := WatchedPodCIDRs(dir, node); !ok || got != c {
		t.Fatalf("after a bookmark: %+v %v", got, ok)
	}
	age(-time.Hour) // from the future (another boot): not trusted either
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("trusted a copy confirmed in the future")
	}
	if err := p.Withdraw(); err != nil {
		t.Fatal(err)
	}
	if err := p.Touch(); err != nil {
		t.Fatal(err)
	}
	if _, ok := WatchedPodCIDRs(dir, node); ok {
		t.Fatal("a bookmark republished a withdrawn copy")
	}
}
