package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// startupCNI is one CNI the node's runtime is switched to for a burst.
type startupCNI struct {
	name  string
	short string // in pod names
	// use makes it the runtime's CNI and returns how to switch back.
	use func(t *testing.T) (restore func())
	// check verifies the burst's pods were networked by it.
	check func(t *testing.T, names []string)
}

// startupBursts measures pod startup through the kubelet (create → Ready,
// as the API client sees it) for kdd-cni, ptp + host-local and (withCalico)
// Calico's own calico binary, in bursts of 30 and 110 pods on one node:
// interleaved, each CNI going first in turn, everything else equal.
func startupBursts(t *testing.T, n *node, withCalico bool) {
	cnis := []startupCNI{n.oursForStartup(), n.ptpForStartup(t)}
	if withCalico {
		cnis = append(cnis, n.calicoForStartup(t))
	}
	lat := map[string]map[int][]time.Duration{}
	sizes := []int{30, 110}
	for i, size := range sizes {
		for j := range cnis {
			c := cnis[(i+j)%len(cnis)]
			t.Run(fmt.Sprintf("%s, burst of %d", c.name, size), func(t *testing.T) {
				restore := c.use(t)
				defer restore()
				names := burstNames(fmt.Sprintf("%s-%d", c.short, size), size)
				for _, d := range n.createPods(names) {
					if lat[c.name] == nil {
						lat[c.name] = map[int][]time.Duration{}
					}
					lat[c.name][size] = append(lat[c.name][size], d)
				}
				c.check(t, names)
				n.deletePods(names)
				// The API forgets a force-deleted pod before the kubelet
				// tears its sandbox down; switching the CNI before those
				// DELs ran would hand them to the next one.
				n.waitFor("every sandbox of the burst torn down", 120*time.Second, func() bool {
					return len(n.leaseOwners()) == 0 && len(n.caliLinks(t)) == 0 &&
						len(harness.HostLocalLeases(filepath.Join(n.dir, "theirs-leases"), "theirs")) == 0 &&
						len(harness.HostLocalLeases(filepath.Join(n.dir, "baseline-leases"), "baseline")) == 0
				})
			})
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pod startup latency through the kubelet (%s), create → Ready, one node:\n", n.runtime.name)
	fmt.Fprintf(&b, "  %-18s %-22s %-22s\n", "", "burst of 30 p50 / p99", "burst of 110 p50 / p99")
	for _, c := range cnis {
		fmt.Fprintf(&b, "  %-18s", c.name)
		for _, size := range sizes {
			if ds := lat[c.name][size]; len(ds) == size {
				p50, p99 := percentiles(ds)
				fmt.Fprintf(&b, " %-22s", fmt.Sprintf("%v / %v", p50.Round(time.Millisecond), p99.Round(time.Millisecond)))
			} else {
				fmt.Fprintf(&b, " %-22s", "–")
			}
		}
		b.WriteString("\n")
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

// oursForStartup: the installed conflist, as is.
func (n *node) oursForStartup() startupCNI {
	return startupCNI{name: "kdd-cni", short: "kddcni",
		use: func(*testing.T) func() { return func() {} },
		check: func(t *testing.T, names []string) {
			n.assertPodNetworks(t, names)
		}}
}

// ptpForStartup: a conflist ahead of ours with ptp + host-local on another
// subnet.
func (n *node) ptpForStartup(t *testing.T) startupCNI {
	return startupCNI{name: "ptp + host-local", short: "ptp",
		use: func(t *testing.T) func() {
			ptp, err := os.ReadFile(filepath.Join(harnessBin(t), "ptp"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(n.binDir(), "ptp"), ptp, 0o755); err != nil {
				t.Fatal(err)
			}
			return n.useConflist(t, "00-ptp.conflist", map[string]any{"cniVersion": "1.0.0", "name": "baseline", "plugins": []any{
				map[string]any{"type": "ptp", "ipMasq": false, "ipam": map[string]any{"type": "host-local", "subnet": "10.99.0.0/16",
					"dataDir": filepath.Join(n.dir, "baseline-leases")}},
			}})
		},
		check: func(t *testing.T, names []string) {
			for _, name := range names {
				if ip := getPod(t, name).Status.PodIP; !strings.HasPrefix(ip, "10.99.") {
					t.Fatalf("pod %s got %s: containerd did not switch to ptp", name, ip)
				}
			}
		}}
}

// calicoForStartup: Calico v3.31.0's own calico binary in place of ours
// (same name, same type), configured as Calico's policy-only manifest does,
// as Calico's CNI identity, with host-local over the node's podCIDR.
func (n *node) calicoForStartup(t *testing.T) startupCNI {
	ctx := context.Background()
	dir, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.InstallCalicoCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(n.dir, "calico-cni.kubeconfig")
	if err := cp.CalicoCNIKubeconfig(ctx, kubeconfig); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(n.dir, "calico-theirs.log")
	return startupCNI{name: "Calico's calico", short: "calico",
		use: func(t *testing.T) func() {
			ours := filepath.Join(n.binDir(), "calico")
			saved, err := os.ReadFile(ours)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := os.ReadFile(filepath.Join(dir, "calico"))
			if err != nil {
				t.Fatal(err)
			}
			replaceFile(t, ours, theirs)
			restoreConf := n.useConflist(t, "00-theirs.conflist", map[string]any{"cniVersion": "1.0.0", "name": "theirs", "plugins": []any{
				map[string]any{"type": "calico", "log_level": "info", "log_file_path": logFile, "datastore_type": "kubernetes",
					"nodename": n.name, "nodename_file_optional": true, "mtu": 1500,
					"ipam":       map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": filepath.Join(n.dir, "theirs-leases")},
					"policy":     map[string]any{"type": "k8s"},
					"kubernetes": map[string]any{"kubeconfig": kubeconfig}},
			}})
			return func() {
				restoreConf()
				replaceFile(t, ours, saved)
			}
		},
		check: func(t *testing.T, names []string) {
			log, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatalf("Calico's calico never ran: %v", err)
			}
			for _, name := range names {
				if !strings.Contains(string(log), name) {
					t.Fatalf("Calico's log does not mention pod %s: containerd did not run it", name)
				}
			}
		}}
}

// useConflist puts conflist ahead of the installed one (the runtime takes
// the first) and returns how to remove it; each waits for containerd to
// reload its CNI configuration.
func (n *node) useConflist(t *testing.T, name string, conflist map[string]any) func() {
	b, _ := json.Marshal(conflist)
	path := filepath.Join(n.netDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	return func() {
		_ = os.Remove(path)
		time.Sleep(2 * time.Second)
	}
}

// replaceFile swaps a binary in place atomically (a running copy keeps
// its inode).
func replaceFile(t *testing.T, path string, content []byte) {
	tmp := path + ".swap"
	if err := os.WriteFile(tmp, content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
