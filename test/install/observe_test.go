package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// scrape reads addr's /metrics in the node namespace and parses it as
// Prometheus does.
func scrape(t *testing.T, addr string) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: suite.CP.DialContext}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

func sampleCount(fam *dto.MetricFamily, labels map[string]string) uint64 {
	var n uint64
	for _, m := range fam.GetMetric() {
		match := true
		for _, l := range m.GetLabel() {
			if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
				match = false
			}
		}
		if match {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

// The sidecar serves the plugins' records as metrics, with the node's pool
// and token, and records one Warning Event on a Node whose kubelet admits
// more pods than its podCIDR has addresses, not one per loop or restart.
func TestSidecarMetricsAndCapacityWarning(t *testing.T) {
	ctx := context.Background()
	const capNode = "cap-node"
	if _, err := suite.CP.CreateNode(ctx, capNode, "10.231.0.0/24"); err != nil {
		t.Fatal(err)
	}
	n, err := suite.CP.Admin.CoreV1().Nodes().Get(ctx, capNode, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Capacity = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("300")}
	if _, err := suite.CP.Admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	const addr = "127.0.0.1:19097"
	h.env["KUBERNETES_NODE_NAME"] = capNode
	h.env["METRICS_BIND_ADDRESS"] = addr
	records := nodestate.Dir(h.path("var/lib/kdd-cni")).Records()
	for i := range 5 {
		records.Append(nodestate.OpRecord{Plugin: "calico", Command: "ADD", Result: "success", Seconds: 0.01 * float64(i+1),
			Steps: map[string]float64{"ipam": 0.004}, API: map[string]int{"PATCH": 1, "GET": 1}})
	}
	records.Append(nodestate.OpRecord{Plugin: "calico", Command: "DEL", Result: "11", Seconds: 1, API: map[string]int{"PATCH": 1}})
	s := startSidecar(t, h)

	var fams map[string]*dto.MetricFamily
	harness.Eventually(t, 15*time.Second, 200*time.Millisecond, "5 ADDs in the metrics", func() error {
		fams, err = scrape(t, addr)
		if n := sampleCount(fams["kdd_cni_operation_duration_seconds"], map[string]string{"command": "ADD"}); err == nil && n != 5 {
			err = fmt.Errorf("%d ADDs\n%s", n, s.out)
		}
		return err
	})
	ops := fams["kdd_cni_operation_duration_seconds"]
	if got := sampleCount(ops, map[string]string{"command": "DEL", "result": "11"}); got != 1 {
		t.Errorf("DEL/11 count %d", got)
	}
	api := map[string]float64{}
	for _, m := range fams["kdd_cni_api_requests_total"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		api[l["command"]+" "+l["verb"]] = m.GetCounter().GetValue()
	}
	if api["ADD PATCH"] != 5 || api["ADD GET"] != 5 || api["DEL PATCH"] != 1 || len(api) != 3 {
		t.Errorf("api requests: %v", api)
	}
	gauge := func(name, family string) float64 {
		for _, m := range fams[name].GetMetric() {
			if family == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == family) {
				return m.GetGauge().GetValue()
			}
		}
		t.Errorf("%s{%s} missing", name, family)
		return -1
	}
	if c := gauge("kdd_cni_ipam_addresses_capacity", "IPv4"); c != 253 {
		t.Errorf("capacity %v, want 253 (10.231.0.0/24 less network, gateway, broadcast)", c)
	}
	if j := gauge("kdd_cni_journal_pending", ""); j != 0 {
		t.Errorf("journal pending %v", j)
	}
	exp, ok := kube.TokenExpiry(h.token())
	if got := gauge("kdd_cni_token_expiry_timestamp_seconds", ""); !ok || got != float64(exp.Unix()) {
		t.Errorf("token expiry gauge %v, token's exp %v", got, exp)
	}
	if left, _ := os.ReadDir(string(records)); len(left) > 1 {
		t.Errorf("records not drained: %v", left)
	}

	events := func() []corev1.Event {
		l, err := suite.CP.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{
			FieldSelector: fmt.Sprintf("involvedObject.name=%s,reason=PodCIDRTooSmall", capNode)})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	harness.Eventually(t, 15*time.Second, 200*time.Millisecond, "a capacity event", func() error {
		if len(events()) == 0 {
			return errors.New("none")
		}
		return nil
	})
	ev := events()
	if len(ev) != 1 || ev[0].Type != "Warning" || !strings.Contains(ev[0].Message, "maxPods (300) exceeds the 253 usable IPv4 addresses") {
		t.Fatalf("capacity events: %+v", ev)
	}
	// A second sidecar on the node finds it and records none.
	h2 := newHost(t)
	h2.env["KUBERNETES_NODE_NAME"] = capNode
	s2 := startSidecar(t, h2)
	logged(t, s2, "capacity warning already recorded", 15*time.Second)
	if n := len(events()); n != 1 {
		t.Errorf("%d capacity events after a second sidecar, want 1", n)
	}
}

// When the runtime cannot be asked for its sandboxes, leak reclamation
// touches nothing: every lease stays.
func TestReclaimDoesNothingWithoutRuntime(t *testing.T) {
	h := newHost(t)
	leases := t.TempDir()
	tmpl, err := os.ReadFile(h.env["CNI_NETWORK_CONFIG_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	withDir := strings.Replace(string(tmpl), `"subnet": "usePodCidr" }`, fmt.Sprintf(`"subnet": "usePodCidr", "dataDir": %q }`, leases), 1)
	if withDir == string(tmpl) {
		t.Fatal("the conflist template changed shape")
	}
	delete(h.env, "CNI_NETWORK_CONFIG_FILE")
	h.env["CNI_NETWORK_CONFIG"] = withDir
	h.env["LEAK_RECLAIM_INTERVAL"] = "1s"
	h.env["LEAK_RECLAIM_GRACE"] = "30s"
	h.env["CONTAINER_RUNTIME_ENDPOINT"] = "unix://" + filepath.Join(t.TempDir(), "no-runtime.sock")
	store := filepath.Join(leases, "k8s-pod-network")
	if err := os.MkdirAll(store, 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for i := 2; i < 5; i++ {
		p := filepath.Join(store, fmt.Sprintf("10.230.0.%d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("forgotten-%d\r\neth0", i)), 0o644); err != nil {
			t.Fatal(err)
		}
		_ = os.Chtimes(p, old, old)
	}
	s := startSidecar(t, h)
	harness.Eventually(t, 15*time.Second, 100*time.Millisecond, "two reclaim attempts logged", func() error {
		if n := strings.Count(s.out.String(), "the runtime cannot be asked"); n < 2 {
			return fmt.Errorf("%d\n%s", n, s.out)
		}
		return nil
	})
	if left, _ := filepath.Glob(filepath.Join(store, "10.230.0.*")); len(left) != 3 {
		t.Errorf("leases left: %v, want all 3", left)
	}
}

// TestMetricsUnderConnectionFlood: the metrics endpoint, on an IPv6 host
// given as METRICS_HOST and METRICS_PORT as the DaemonSet gives the node's
// IP, holds thousands of idle and half-sent connections (any pod can open
// them: the sidecar is on the host network) without growing towards its
// 64 MiB limit, and serves a scrape again as soon as they go.
func TestMetricsUnderConnectionFlood(t *testing.T) {
	const flood = 5000
	h := newHost(t)
	h.env["METRICS_HOST"], h.env["METRICS_PORT"] = "::1", "19098"
	const addr = "[::1]:19098"
	s := startSidecar(t, h)
	harness.Eventually(t, 15*time.Second, 200*time.Millisecond, "metrics on "+addr, func() error { _, err := scrape(t, addr); return err })
	base := rssBytes(t, s.pid)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	refused := 0
	for i := range flood {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		c, err := suite.CP.DialContext(ctx, "tcp", addr)
		cancel()
		if err != nil {
			refused++
			continue
		}
		if i%2 == 0 { // half a request, never finished
			_, _ = c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\n"))
		}
		conns = append(conns, c)
	}
	peak := base
	for range 20 {
		peak = max(peak, rssBytes(t, s.pid))
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("%d connections held (%d not accepted in time): sidecar RSS %.1f MiB before, %.1f MiB peak",
		len(conns), refused, float64(base)/(1<<20), float64(peak)/(1<<20))
	if len(conns) < flood/2 {
		t.Errorf("only %d of %d connections opened: the flood proves nothing", len(conns), flood)
	}
	if peak > 40<<20 || peak-base > 16<<20 {
		t.Errorf("sidecar RSS grew from %.1f to %.1f MiB under %d connections (limit 64 MiB)",
			float64(base)/(1<<20), float64(peak)/(1<<20), len(conns))
	}
	for _, c := range conns {
		_ = c.Close()
	}
	conns = nil
	harness.Eventually(t, 10*time.Second, 100*time.Millisecond, "a scrape after the flood", func() error { _, err := scrape(t, addr); return err })
}

// rssBytes is a process's resident set (VmRSS).
func rssBytes(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}
