package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// typhaImage is a stand-in for calico/typha: the pinned Typha as Calico's
// image lays it out.
const typhaImage = "kdd-cni.local/typha:v3.31.0"

// typhaConfig is the image's /etc/calico/typha.cfg (Calico's, as shipped).
const typhaConfig = "[global]\nMetadataAddr = None\nLogFilePath = None\nLogSeverityFile = None\n"

// buildTyphaImage packs calico-typha.
func buildTyphaImage(dir, calico string) (string, error) {
	typha, err := os.ReadFile(filepath.Join(calico, "calico-typha"))
	if err != nil {
		return "", err
	}
	files := []harness.ImageFile{
		{Path: "/usr/bin/calico-typha", Mode: 0o755, Data: typha},
		{Path: "/etc/calico/typha.cfg", Mode: 0o644, Data: []byte(typhaConfig)},
		{Path: "/tmp", Dir: true},
	}
	path := filepath.Join(dir, "typha-image.tar")
	return path, harness.Image{Name: typhaImage, Files: files, Entrypoint: []string{"/usr/bin/calico-typha"}}.WriteArchive(path)
}

// typhaJourney is the seeds' path to large clusters on the live cluster:
// Felix switched onto Typha (kddctl typha-certs, replicas, the ConfigMap
// key, calico-node restarted, as the manifest's header says) and back off,
// with pods probing each other across the nodes throughout; while on, both
// Felixes sync through Typha and make no watch of their own, NetworkPolicy
// across the nodes is enforced, and Typha's port refuses clients without a
// certificate its CA signed for Felix's name.
func (c *cluster) typhaJourney(t *testing.T) {
	ctx := context.Background()
	pairs := [][2]string{{"a1", "b2"}, {"b2", "a1"}}
	defer func() {
		if t.Failed() || c.t.Failed() {
			t.Logf("Typha's and Felix's logs:\n%s%s", c.podLogs("kube-system_calico-typha-"), c.podLogs("kube-system_calico-node-"))
		}
	}()
	direct := c.felixLoad(t, "Felix straight to the API server", 0)

	secrets := filepath.Join(t.TempDir(), "typha-certs.yaml")
	out, err := exec.Command(filepath.Join(rootfs, "opt/cni/bin/kddctl"), "typha-certs").Output()
	if err == nil {
		err = os.WriteFile(secrets, out, 0o600)
	}
	if err == nil {
		err = cp.ApplyManifest(ctx, secrets, false)
	}
	if err != nil {
		t.Fatalf("kddctl typha-certs | kubectl apply -f -: %v", err)
	}
	t.Cleanup(func() {
		for _, s := range []string{"calico-typha-tls", "calico-felix-typha-tls"} {
			_ = cp.Admin.CoreV1().Secrets("kube-system").Delete(context.Background(), s, metav1.DeleteOptions{})
		}
	})

	mark := cp.AuditMark()
	start := time.Now()
	s := c.probesDuring(pairs, func() { c.switchTypha(t, 1, "calico-typha") })
	t.Logf("Typha on: %s; %d pod-to-pod probes across nodes during it, %d failed", time.Since(start).Round(time.Millisecond), s.probes, s.failures)
	if s.failures > 0 {
		t.Errorf("pods lost their network while Felix moved onto Typha: %d of %d probes failed, first: %v", s.failures, s.probes, s.first)
	}
	typhaNode := c.typhaNode(t)
	c.waitTyphaClients(t, typhaNode, len(c.nodes))
	for _, n := range c.nodes { // and each Felix says so itself
		if logs := n.podLogs("kube-system_calico-node-"); !strings.Contains(logs, "Connected to Typha") {
			t.Errorf("%s: Felix never logged \"Connected to Typha\"", n.name)
		}
	}
	synced := cp.AuditMark()
	c.policyAcrossNodes()
	via := c.felixLoad(t, "Felix through Typha", synced)
	if via.felixWatches != 0 {
		t.Errorf("Felix made %d watches of its own with Typha on: %v", via.felixWatches, via.felixWhat)
	}
	if n := c.watchesSince(t, mark, harness.TyphaUser); n == 0 {
		t.Error("Typha opened no watch on the API server")
	}
	c.typhaRefuses(t, typhaNode)
	// Reported, not asserted: on two nodes Felix's 46 watches and Typha's
	// 31 differ by less than the kubelets' own watches move.
	t.Logf("open watches on the API server: %.0f with Felix straight to it, %.0f through Typha", direct.open, via.open)

	mark = cp.AuditMark()
	start = time.Now()
	s = c.probesDuring(pairs, func() { c.switchTypha(t, 0, "none") })
	t.Logf("Typha off: %s; %d pod-to-pod probes across nodes during it, %d failed", time.Since(start).Round(time.Millisecond), s.probes, s.failures)
	if s.failures > 0 {
		t.Errorf("pods lost their network while Felix moved off Typha: %d of %d probes failed, first: %v", s.failures, s.probes, s.first)
	}
	if n := c.watchesSince(t, mark, harness.FelixUser); n == 0 {
		t.Error("Felix did not watch the API server itself again with Typha off")
	}
	c.expect("Typha off", [][2]string{{"a1", "b1"}, {"b1", "a2"}}, nil)
}

// felixLoad is what the Felixes cost the API server: the watches the
// apiserver holds open (all clients), and the watches Felix's identity
// began after mark; with its CPU over a 20 s idle window, and what
// install-cni's sidecars asked of it in that window (our CNI's own
// steady per-node cost).
type felixLoad struct {
	open         float64 // apiserver_longrunning_requests{verb=WATCH}
	felixWatches int
	felixWhat    []string
	cpu          time.Duration
}

const loadWindow = 20 * time.Second

func (c *cluster) felixLoad(t *testing.T, what string, mark int64) felixLoad {
	t.Helper()
	ctx := context.Background()
	var l felixLoad
	window := cp.AuditMark()
	cpu0, err := cp.APIServerMetric(ctx, "process_cpu_seconds_total", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(loadWindow)
	cpu1, err := cp.APIServerMetric(ctx, "process_cpu_seconds_total", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.cpu = time.Duration((cpu1 - cpu0) * float64(time.Second))
	ours, err := cp.AuditEvents(window, harness.InstallUser)
	if err != nil {
		t.Fatal(err)
	}
	sidecar := map[string][]string{}
	for _, ev := range ours {
		if ev.Stage == "ResponseComplete" || strings.HasPrefix(ev.What, "WATCH ") {
			sidecar[ev.SourceIP] = append(sidecar[ev.SourceIP], ev.What+" ("+ev.Stage+")")
		}
	}
	t.Logf("%s: install-cni's requests in %s, per node: %v", what, loadWindow, sidecar)
	if l.open, err = cp.APIServerMetric(ctx, "apiserver_longrunning_requests", map[string]string{"verb": "WATCH"}); err != nil {
		t.Fatal(err)
	}
	evs, err := cp.AuditEvents(mark, harness.FelixUser)
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, ev := range evs {
		if ev.Stage == "ResponseStarted" && strings.HasPrefix(ev.What, "WATCH ") {
			l.felixWatches++
			l.felixWhat = append(l.felixWhat, ev.What)
			perNode[ev.SourceIP]++
		}
	}
	t.Logf("%s: apiserver CPU %s over %s idle, %.0f watches open on it; Felix began %d watches since the mark (per node: %v)",
		what, l.cpu.Round(time.Millisecond), loadWindow, l.open, l.felixWatches, perNode)
	return l
}

// watchesSince counts the watches user began after mark.
func (c *cluster) watchesSince(t *testing.T, mark int64, user string) int {
	t.Helper()
	evs, err := cp.AuditEvents(mark, user)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Stage == "ResponseStarted" && strings.HasPrefix(ev.What, "WATCH ") {
			n++
		}
	}
	t.Logf("%s began %d watches", user, n)
	return n
}

// switchTypha sets Typha's replicas and Felix's typha_service_name, and
// restarts calico-node, as an operator does: Typha up first when turning
// it on, Felix off it first when turning it off.
func (c *cluster) switchTypha(t *testing.T, replicas int, service string) {
	ctx := context.Background()
	if replicas > 0 {
		c.scaleTypha(t, replicas)
	}
	cm := fmt.Sprintf(`{"data":{"typha_service_name":%q}}`, service)
	if _, err := cp.Admin.CoreV1().ConfigMaps("kube-system").Patch(ctx, "kdd-cni-config", types.MergePatchType, []byte(cm), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	restart := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := cp.Admin.AppsV1().DaemonSets("kube-system").Patch(ctx, "calico-node", types.StrategicMergePatchType, []byte(restart), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitDaemonSet("calico-node", felixImage)
	if replicas == 0 {
		c.scaleTypha(t, 0)
	}
}

// scaleTypha scales calico-typha and waits for that many ready replicas
// (and no other pod).
func (c *cluster) scaleTypha(t *testing.T, replicas int) {
	ctx := context.Background()
	scale := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := cp.Admin.AppsV1().Deployments("kube-system").Patch(ctx, "calico-typha", types.MergePatchType, []byte(scale), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var last string
	c.nodes[0].waitFor(fmt.Sprintf("calico-typha at %d ready replicas", replicas), 180*time.Second, func() bool {
		pods, err := cp.Admin.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=calico-typha"})
		if err != nil {
			return false
		}
		n := 0
		last = ""
		for _, p := range pods.Items {
			last += fmt.Sprintf("%s on %s: %s ready=%v; ", p.Name, p.Spec.NodeName, p.Status.Phase, ready(&p))
			if ready(&p) && p.DeletionTimestamp == nil {
				n++
			}
		}
		return n == replicas && len(pods.Items) == replicas
	})
	t.Logf("calico-typha: %s", last)
}

// typhaNode is the node running the one Typha.
func (c *cluster) typhaNode(t *testing.T) *node {
	pods, err := cp.Admin.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{LabelSelector: "k8s-app=calico-typha"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("want one calico-typha pod: %v", err)
	}
	for _, n := range c.nodes {
		if n.name == pods.Items[0].Spec.NodeName {
			return n
		}
	}
	t.Fatalf("calico-typha on unknown node %s", pods.Items[0].Spec.NodeName)
	return nil
}

// typhaMetrics scrapes Typha's metrics on its node's loopback.
func (n *node) typhaMetrics() (map[string]*dto.MetricFamily, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: n.host.DialContext, DisableKeepAlives: true}}
	resp, err := hc.Get("http://127.0.0.1:9093/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}

// waitTyphaClients waits until Typha streams to want Felixes, as its own
// typha_connections_streaming gauge says.
func (c *cluster) waitTyphaClients(t *testing.T, n *node, want int) {
	var last string
	defer func() { t.Logf("Typha on %s: %s", n.name, last) }()
	n.waitFor(fmt.Sprintf("Typha streaming to %d Felixes", want), 90*time.Second, func() bool {
		mf, err := n.typhaMetrics()
		if err != nil {
			last = err.Error()
			return false
		}
		got := -1.0
		if f := mf["typha_connections_streaming"]; f != nil {
			for _, m := range f.Metric {
				if labelsOf(m)["syncer"] == "felix" {
					got = m.GetGauge().GetValue()
				}
			}
		}
		last = fmt.Sprintf("typha_connections_streaming{syncer=felix} %v", got)
		return got == float64(want)
	})
}

// typhaRefuses dials Typha's port from the other node, as any host on the
// network could: plain TCP, TLS without a client certificate, and TLS with
// a certificate from another CA under Felix's own name are all refused
// (no sync data); Felix's credentials are taken (the control).
func (c *cluster) typhaRefuses(t *testing.T, typhaNode *node) {
	ctx := context.Background()
	from := c.nodes[0]
	if from == typhaNode {
		from = c.nodes[1]
	}
	addr := net.JoinHostPort(typhaNode.nodeIP(), "5473")
	felix, err := cp.Admin.CoreV1().Secrets("kube-system").Get(ctx, "calico-felix-typha-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(felix.Data["ca.crt"])
	own, err := tls.X509KeyPair(felix.Data["tls.crt"], felix.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(rootfs, "opt/cni/bin/kddctl"), "typha-certs").Output()
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignClientCert(t, out)

	dial := func(cfg *tls.Config) error {
		conn, err := from.host.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if cfg == nil { // plain TCP: Typha's protocol without TLS
			if _, err := conn.Write([]byte("hello\n")); err != nil {
				return err
			}
			_, err = io.ReadAll(conn)
			return fmt.Errorf("plain TCP: connection closed (%v)", err)
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		// TLS 1.3 finishes the client's handshake before the server has
		// checked the client's certificate: its verdict comes on read.
		_ = tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = tc.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil // kept open, waiting for Felix's hello: accepted
		}
		return err
	}
	base := func() *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "typha-server", MinVersion: tls.VersionTLS12}
	}
	withOwn, withForeign := base(), base()
	withOwn.Certificates = []tls.Certificate{own}
	withForeign.Certificates = []tls.Certificate{foreign}
	if err := dial(withOwn); err != nil {
		t.Errorf("Typha refused Felix's own credentials: %v", err)
	}
	for name, cfg := range map[string]*tls.Config{"plain TCP": nil, "TLS without a client certificate": base(), "a client certificate of another CA": withForeign} {
		err := dial(cfg)
		t.Logf("Typha's port, %s: %v", name, err)
		if err == nil {
			t.Errorf("Typha accepted a client with %s", name)
		}
	}
}

// foreignClientCert is the client certificate of a kddctl typha-certs run
// that was never applied.
func foreignClientCert(t *testing.T, manifest []byte) tls.Certificate {
	t.Helper()
	for _, doc := range strings.Split(string(manifest), "\n---\n") {
		var s corev1.Secret
		if err := yaml.Unmarshal([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		if s.Name == "calico-felix-typha-tls" {
			cert, err := tls.X509KeyPair(s.Data["tls.crt"], s.Data["tls.key"])
			if err != nil {
				t.Fatal(err)
			}
			return cert
		}
	}
	t.Fatal("no calico-felix-typha-tls in kddctl typha-certs' output")
	return tls.Certificate{}
}

// podLogs is the whole log of every container of the pods whose log
// directory starts with prefix ("NAMESPACE_NAME"), on every node.
func (c *cluster) podLogs(prefix string) string {
	var b strings.Builder
	for _, n := range c.nodes {
		b.WriteString(n.podLogs(prefix))
	}
	return b.String()
}

// podLogs is cluster.podLogs on n alone, each file under a header.
func (n *node) podLogs(prefix string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(n.dir, "pod-logs", prefix+"*", "*", "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		fmt.Fprintf(&b, "--- %s: %s ---\n%s", n.name, strings.TrimPrefix(l, n.dir), data)
	}
	return b.String()
}
