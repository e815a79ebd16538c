package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// hostLocalPair drives one host-local store two ways: in-process (the
// plugins' ipamexec with host-local's own packages) and the host-local
// binary exec'd as a runtime would.
type hostLocalPair struct {
	t     *testing.T
	conf  []byte
	netns string // a sandbox's, for the binary's CNI_NETNS
}

func newHostLocalPair(t *testing.T, subnet string) hostLocalPair {
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "interop", "type": "ptp",
		"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(),
			"ranges": []any{[]any{map[string]any{"subnet": subnet}}}}})
	if err != nil {
		t.Fatal(err)
	}
	return hostLocalPair{t: t, conf: conf, netns: harness.NewNetNST(t, "hl").Path}
}

func (h hostLocalPair) inProcess(cmd, id string) (net.IP, error) {
	c := ipamexec.Call{Plugin: "host-local", Config: h.conf,
		Args: &skel.CmdArgs{ContainerID: id, IfName: "eth0", Args: "K8S_POD_NAME=x", Path: "/nonexistent"}}
	ctx := context.Background()
	switch cmd {
	case "DEL":
		return nil, c.Del(ctx)
	case "CHECK":
		return nil, c.Check(ctx)
	}
	r, err := c.Add(ctx)
	if err != nil {
		return nil, err
	}
	return r.IPs[0].Address.IP, nil
}

func (h hostLocalPair) binary(cmd, id string) (net.IP, error) {
	r := cluster.RunCNI(context.Background(), harness.CNICall{Binary: filepath.Join(binDir, "host-local"), Command: cmd,
		ContainerID: id, Netns: h.netns, IfName: "eth0", Path: binDir, Config: h.conf, Args: "IgnoreUnknown=1;K8S_POD_NAME=x"})
	if r.Err != nil || cmd != "ADD" {
		return nil, r.Err
	}
	res, err := types100.NewResult(r.Stdout)
	if err != nil {
		return nil, err
	}
	return res.(*types100.Result).IPs[0].Address.IP, nil
}

func (h hostLocalPair) run(way, cmd, id string) (net.IP, error) {
	if way == "in-process" {
		return h.inProcess(cmd, id)
	}
	return h.binary(cmd, id)
}

// leases is the store as host-local keeps it: IP → container ID.
func (h hostLocalPair) leases() map[string]string {
	var c struct {
		IPAM struct {
			DataDir string `json:"dataDir"`
		} `json:"ipam"`
	}
	_ = json.Unmarshal(h.conf, &c)
	return harness.HostLocalLeases(c.IPAM.DataDir, "interop")
}

// host-local in-process and the host-local binary share one store at any
// time, both ways: many of each at once never hand out one address twice,
// each releases and checks the other's leases, and the round-robin goes on
// from the other's last_reserved_ip.
func TestHostLocalInProcessInterop(t *testing.T) {
	requireCluster(t)
	h := newHostLocalPair(t, "10.250.0.0/26") // 61 addresses
	ways := []string{"in-process", "binary"}

	t.Run("many at once", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		got := map[string]string{} // IP → container ID
		for i := range 48 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				way, id := ways[i%2], fmt.Sprintf("c%02d", i)
				ip, err := h.run(way, "ADD", id)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("%s ADD %s: %v", way, id, err)
					return
				}
				if other, dup := got[ip.String()]; dup {
					t.Errorf("%s handed out %s to %s, already %s's", way, ip, id, other)
				}
				got[ip.String()] = id
			}()
		}
		wg.Wait()
		if leases := h.leases(); len(leases) != 48 || len(got) != 48 {
			t.Fatalf("%d leases and %d distinct addresses for 48 ADDs", len(leases), len(got))
		}
		for ip, id := range h.leases() {
			if got[ip] != id {
				t.Errorf("lease %s held by %s, handed out to %s", ip, id, got[ip])
			}
		}
	})

	t.Run("each checks and releases the other's", func(t *testing.T) {
		for i := range 48 {
			id := fmt.Sprintf("c%02d", i)
			other := ways[(i+1)%2] // not the way that allocated it
			if _, err := h.run(other, "CHECK", id); err != nil {
				t.Errorf("%s CHECK of %s: %v", other, id, err)
			}
			if _, err := h.run(other, "DEL", id); err != nil {
				t.Errorf("%s DEL of %s: %v", other, id, err)
			}
			if _, err := h.run(other, "CHECK", id); err == nil {
				t.Errorf("%s CHECK of %s passed after its DEL", other, id)
			}
		}
		if leases := h.leases(); len(leases) != 0 {
			t.Errorf("leases left: %v", leases)
		}
	})

	t.Run("one round-robin", func(t *testing.T) {
		var prev net.IP
		for i := range 6 {
			way := ways[i%2]
			ip, err := h.run(way, "ADD", fmt.Sprintf("rr%d", i))
			if err != nil {
				t.Fatalf("%s ADD: %v", way, err)
			}
			if prev != nil && ip.To4()[3] != prev.To4()[3]+1 {
				t.Errorf("%s took %s after %s: not the next from the shared last_reserved_ip", way, ip, prev)
			}
			prev = ip
		}
	})

	t.Run("same refusals", func(t *testing.T) {
		full := newHostLocalPair(t, "10.250.1.0/30") // one address
		if _, err := full.run("binary", "ADD", "first"); err != nil {
			t.Fatal(err)
		}
		for _, way := range ways {
			_, err := full.run(way, "ADD", "second-"+way)
			if err == nil || !strings.Contains(err.Error(), "no IP addresses available in range set") {
				t.Errorf("%s ADD into a full range: %v", way, err)
			}
		}
		if leases := full.leases(); len(leases) != 1 {
			t.Errorf("a refused ADD left a lease: %v", leases)
		}
	})
}

// The plugins run host-local in-process: no host-local binary needs to be
// in CNI_PATH for ADD, CHECK and DEL.
func TestHostLocalNeedsNoBinary(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	path := t.TempDir()
	if err := os.Symlink(filepath.Join(binDir, "calico"), filepath.Join(path, "calico")); err != nil {
		t.Fatal(err)
	}
	p := e.newPod("web", false)
	pl := e.plugin()
	pl.Path = path
	if err := cluster.Add(context.Background(), pl, p); err != nil {
		t.Fatalf("ADD without host-local in CNI_PATH: %v", err)
	}
	if leases := e.leases(); len(leases) != 1 || leases[p.IPs()[0].String()] != p.ContainerID {
		t.Errorf("leases %v for %v", leases, p.IPs())
	}
	if r := cluster.Check(context.Background(), pl, p); r.Err != nil {
		t.Errorf("CHECK: %v", r.Err)
	}
	if err := cluster.Del(context.Background(), pl, p); err != nil {
		t.Fatal(err)
	}
	e.assertGone(p, p.IPs())
}

// In-process host-local is bounded by ADD's deadline like an exec'd one: a
// store lock held past it fails the ADD with nothing left behind, and the
// allocation that waited on the lock never lands.
func TestHostLocalLockHeldPastDeadline(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	store := filepath.Join(e.dataDir, networkName)
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(store, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	p := e.newPod("waits", false)
	start := time.Now()
	r := e.call("ADD", p, e.conf())
	took := time.Since(start)
	if ce := cniErr(t, r); !strings.Contains(ce.Msg, "in-process) by the command's deadline") {
		t.Errorf("ADD with host-local's lock held: %s", ce.Msg)
	}
	if took > 10500*time.Millisecond {
		t.Errorf("ADD took %s, beyond its 10 s bound", took)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // a straggler would land now
	if l := e.leases(); len(l) != 0 {
		t.Errorf("leases after the ADD failed: %v", l)
	}
	e.assertGone(p, nil)
	t.Logf("ADD failed after %s with the store locked", took.Round(time.Millisecond))
}
