package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// metricsPort is where the kdd-cni DaemonSet serves metrics on each node.
const metricsPort = "9097"

// scrape reads the node's kdd-cni metrics endpoint, from the node, and
// parses it as Prometheus does.
func (n *node) scrape() (map[string]*dto.MetricFamily, string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.host.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + net.JoinHostPort(n.nodeIP(), metricsPort) + "/metrics")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	return fams, string(body), err
}

// apiRequestsOf is kdd_cni_api_requests_total by "COMMAND VERB".
func apiRequestsOf(fams map[string]*dto.MetricFamily) map[string]float64 {
	api := map[string]float64{}
	for _, m := range fams["kdd_cni_api_requests_total"].GetMetric() {
		l := labelsOf(m)
		api[l["command"]+" "+l["verb"]] += m.GetCounter().GetValue()
	}
	return api
}

// addRequests is what the node's first adds ADDs sent, once the metrics
// count that many: all requests, and the PATCHes among them.
func (n *node) addRequests(t *testing.T, adds int) (all, patches float64) {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	n.waitFor(fmt.Sprintf("metrics to count %d ADDs", adds), 20*time.Second, func() bool {
		var err error
		fams, _, err = n.scrape()
		return err == nil && operations(fams, "ADD", "") == uint64(adds)
	})
	api := apiRequestsOf(fams)
	for k, v := range api {
		if strings.HasPrefix(k, "ADD ") {
			all += v
		}
	}
	return all, api["ADD PATCH"]
}

// operations counts the calico plugin's commands in
// kdd_cni_operation_duration_seconds, of one result ("" for any).
func operations(fams map[string]*dto.MetricFamily, command, result string) (c uint64) {
	for _, m := range fams["kdd_cni_operation_duration_seconds"].GetMetric() {
		l := labelsOf(m)
		if l["plugin"] == "calico" && l["command"] == command && (result == "" || l["result"] == result) {
			c += m.GetHistogram().GetSampleCount()
		}
	}
	return c
}

func labelsOf(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// checkMetrics scrapes the node after known operations: adds ADDs (one per
// sandbox the test created on it) and at least dels DELs, all successful.
// Counts must match exactly; the pool gauges must match host-local's store.
func (n *node) checkMetrics(t *testing.T, adds, dels int) {
	t.Helper()
	var fams map[string]*dto.MetricFamily
	var text string
	count := func(command, result string) uint64 { return operations(fams, command, result) }
	var err error
	n.waitFor(fmt.Sprintf("metrics to count %d ADDs", adds), 20*time.Second, func() bool {
		fams, text, err = n.scrape()
		return err == nil && count("ADD", "") >= uint64(adds) && count("DEL", "") >= uint64(dels)
	})
	if got := count("ADD", "success"); got != uint64(adds) || count("ADD", "") != got {
		t.Errorf("%s: %d ADDs counted (%d successful), want %d successful", n.name, count("ADD", ""), got, adds)
	}
	if got := count("DEL", "success"); got < uint64(dels) || count("DEL", "") != got {
		t.Errorf("%s: %d DELs counted (%d successful), want at least %d, all successful", n.name, count("DEL", ""), got, dels)
	}
	api := apiRequestsOf(fams)
	if api["ADD PATCH"] != float64(adds) {
		t.Errorf("%s: %v PATCHes by ADD, want one per ADD (%d): %v", n.name, api["ADD PATCH"], adds, api)
	}
	// The sidecar publishes the node's podCIDRs from its watch: ADDs read
	// no Node, but the node's first sandboxes may precede the watch.
	if api["ADD GET"] > 2 {
		t.Errorf("%s: %v GETs by ADD, want none once the sidecar watches the Node: %v", n.name, api["ADD GET"], api)
	}
	if c, ok := nodestate.WatchedPodCIDRs(n.stateDir, n.name); !ok || c.CIDRs.V4 == "" {
		t.Errorf("%s: the sidecar publishes no podCIDRs (%+v, live %v)", n.name, c, ok)
	}
	gauge := func(name string) float64 {
		for _, m := range fams[name].GetMetric() {
			if l := labelsOf(m); l["family"] == "" || l["family"] == "IPv4" {
				return m.GetGauge().GetValue()
			}
		}
		return -1
	}
	if got, want := gauge("kdd_cni_ipam_addresses_in_use"), float64(len(n.leaseOwners())); got != want {
		t.Errorf("%s: addresses in use %v, host-local holds %v", n.name, got, want)
	}
	if got := gauge("kdd_cni_ipam_addresses_capacity"); got != 253 {
		t.Errorf("%s: capacity %v, want 253 (a /24)", n.name, got)
	}
	if got := gauge("kdd_cni_journal_pending"); got != 0 {
		t.Errorf("%s: journal pending %v", n.name, got)
	}
	if exp := time.Unix(int64(gauge("kdd_cni_token_expiry_timestamp_seconds")), 0); time.Until(exp) < time.Hour {
		t.Errorf("%s: token expiry %v", n.name, exp)
	}
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "kdd_cni_") && !strings.Contains(l, "_bucket{") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	t.Logf("%s: scrape of :%s/metrics (kdd_cni_*, buckets left out):\n%s", n.name, metricsPort, strings.Join(lines, "\n"))
}

// wipeRuntime is a reboot as the runtime sees it, or a lost DEL: with the
// kubelet stopped, forget's pods are force-deleted, every container is
// killed behind containerd's back and containerd comes back with its state
// wiped. The sandboxes' leases (and, their network namespaces still
// pinned, their host veths) are then known to no runtime; the kubelet gives
// the remaining pods new sandboxes. install-cni's reclaimer must release
// exactly the leaked leases and veths, while pods keep theirs.
func (c *cluster) wipeRuntime(t *testing.T, n *node, keep, forget []string) {
	ctx := context.Background()
	before := n.leaseOwners()
	old := map[string]bool{}
	for _, id := range before {
		old[id] = true
	}
	if err := n.kubelet.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	n.kubelet = nil // stopped on purpose: not a daemon that died (waitFor)
	zero := int64(0)
	for _, name := range forget {
		if err := cp.Admin.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
	}
	runcRoot := filepath.Join(n.dir, "runc", "k8s.io")
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("runc", "--root", runcRoot, "kill", id, "KILL").Run()
			_ = exec.Command("runc", "--root", runcRoot, "delete", "--force", id).Run()
		}
	}
	if err := n.containerd.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pidsWithArg(n.sock) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	killCgroup(n.cgroupRoot)
	for _, d := range []string{"containerd-root", "containerd-state", "runc"} {
		harness.UnmountUnder(filepath.Join(n.dir, d))
		if err := os.RemoveAll(filepath.Join(n.dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	n.startContainerd(n.images[1:]...)
	n.startKubelet()
	n.waitReady()
	start := time.Now()
	n.waitFor("pods running again in new sandboxes", 120*time.Second, func() bool {
		for _, name := range keep {
			p, err := cp.Admin.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil || !ready(p) || old[p.Annotations["cni.projectcalico.org/containerID"]] {
				return false
			}
		}
		return true
	})
	n.waitFor("leaked leases and host veths reclaimed", 120*time.Second, func() bool {
		return len(n.leaseOwners()) == len(keep) && len(n.caliLinks(t)) == len(keep)
	})
	t.Logf("%s: %d leases before the wipe (%d pods kept, %d forgotten); leaks reclaimed %s after the node came back",
		n.name, len(before), len(keep), len(forget), time.Since(start).Round(time.Millisecond))
	n.assertPodNetworks(t, keep)
	// It was the reclaimer: its log says what it released. The line is
	// written once its GC has returned, and reaches the log file through
	// the runtime: the leases can be seen gone a moment before.
	var said []string
	var logs []string
	_ = harness.Poll(15*time.Second, 100*time.Millisecond, func() error {
		logs, _ = filepath.Glob(filepath.Join(n.dir, "pod-logs", "kube-system_kdd-cni-node-*", "token-refresh", "*.log"))
		for _, f := range logs {
			b, _ := os.ReadFile(f)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "reclaimed leaks") && !strings.Contains(l, "released=0") {
					_, msg, _ := strings.Cut(l, " F ") // CRI log: time stream F message
					said = append(said, msg)
				}
			}
		}
		if len(said) == 0 {
			return errors.New("no such line yet")
		}
		return nil
	})
	if len(said) == 0 {
		t.Errorf("%s: no reclaimer log line says it released a lease within 15 s (logs %v)", n.name, logs)
	}
	t.Logf("%s: install-cni's reclaimer:\n%s", n.name, strings.Join(said, "\n"))
	after := n.leaseOwners()
	for ip, owner := range before {
		if after[ip] == owner {
			t.Errorf("lease %s of the forgotten sandbox %s survived", ip, owner)
		}
	}
}
