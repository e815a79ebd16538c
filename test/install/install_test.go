package install

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// host is a fake host root for one install-cni run.
type host struct {
	t    *testing.T
	root string
	env  map[string]string
}

func newHost(t *testing.T) *host {
	harness.RequireRoot(t)
	root := t.TempDir()
	return &host{t: t, root: root, env: map[string]string{
		"CNI_HOST_ROOT":             root,
		"CNI_BIN_SRC_DIR":           filepath.Join(rootfs, "opt/cni/bin"),
		"CNI_NET_DIR":               filepath.Join(root, "etc/cni/net.d"), // the plugin runs on this machine
		"CNI_NETWORK_CONFIG_FILE":   filepath.Join(rootfs, "etc/kdd-cni/10-calico.conflist.template"),
		"KUBECONFIG":                installerKubeconfig,
		"POD_NAMESPACE":             "kube-system",
		"KUBERNETES_NODE_NAME":      node,
		"SLEEP":                     "false",
		"SERVICEACCOUNT_TOKEN_FILE": filepath.Join(root, "own-token"),
		"LEAK_RECLAIM_INTERVAL":     "0", // no runtime here (see the e2e)
		"FLANNEL_SUBNET_FILE":       filepath.Join(root, "run/flannel/subnet.env"),
	}}
}

func (h *host) cmd() *exec.Cmd {
	cmd := exec.Command(filepath.Join(rootfs, "opt/cni/bin/install-cni"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// install runs install-cni once in the node namespace.
func (h *host) install() (string, error) {
	cmd := h.cmd()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := suite.CP.Run(cmd)
	return out.String(), err
}

func (h *host) path(p string) string { return filepath.Join(h.root, p) }

func mode(t *testing.T, p string) os.FileMode {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func inode(t *testing.T, p string) uint64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestInstallFilesModesContents(t *testing.T) {
	h := newHost(t)
	h.env["SKIP_CNI_BINARIES"] = "podcidr"
	h.env["CNI_OLD_CONF_NAME"] = "10-old.conflist"
	if err := os.MkdirAll(h.path("etc/cni/net.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.path("etc/cni/net.d/10-old.conflist"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h.install(); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out)
	}
	// Binaries: the CNI plugins, byte for byte, 0755; not install-cni, kddctl, or skipped ones.
	for _, b := range []string{"calico", "host-local", "portmap", "loopback"} {
		want, _ := os.ReadFile(filepath.Join(rootfs, "opt/cni/bin", b))
		got, err := os.ReadFile(h.path("opt/cni/bin/" + b))
		if err != nil || !bytes.Equal(got, want) || mode(t, h.path("opt/cni/bin/"+b)) != 0o755 {
			t.Errorf("%s not installed intact (%v)", b, err)
		}
	}
	for _, b := range []string{"install-cni", "kddctl", "podcidr"} {
		if _, err := os.Stat(h.path("opt/cni/bin/" + b)); err == nil {
			t.Errorf("%s must not be installed", b)
		}
	}
	// Kubeconfig: 0600, the CNI identity, working.
	kc := h.path("etc/cni/net.d/calico-kubeconfig")
	if m := mode(t, kc); m != 0o600 {
		t.Errorf("kubeconfig mode %o", m)
	}
	cni, _, err := suite.CP.ClientFor(kc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cni.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil {
		t.Errorf("CNI kubeconfig cannot get its node: %v", err)
	}
	if _, err := cni.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("CNI kubeconfig may list pods (want 403): %v", err)
	}
	// Conflist: 0600, placeholders filled, points at the kubeconfig.
	cl := h.path("etc/cni/net.d/10-calico.conflist")
	if m := mode(t, cl); m != 0o600 {
		t.Errorf("conflist mode %o", m)
	}
	b, _ := os.ReadFile(cl)
	if strings.Contains(string(b), "__") {
		t.Errorf("placeholder left in conflist: %s", b)
	}
	var list struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type       string `json:"type"`
			Nodename   string `json:"nodename"`
			MTU        int    `json:"mtu"`
			Kubernetes struct {
				Kubeconfig string `json:"kubeconfig"`
			} `json:"kubernetes"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	// The Node has not reported a runtime: the version every runtime takes.
	if p := list.Plugins[0]; list.CNIVersion != "1.0.0" || p.Type != "calico" || p.Nodename != node || p.MTU != 1500 || p.Kubernetes.Kubeconfig != kc {
		t.Errorf("conflist: %s", b)
	}
	if _, err := os.Stat(h.path("etc/cni/net.d/10-old.conflist")); err == nil {
		t.Error("old conflist not removed")
	}
	// A second run leaves identical binaries alone.
	before := inode(t, h.path("opt/cni/bin/calico"))
	if out, err := h.install(); err != nil {
		t.Fatalf("second install: %v\n%s", err, out)
	}
	if inode(t, h.path("opt/cni/bin/calico")) != before {
		t.Error("identical binary rewritten")
	}
}

// The installed plugin works with what install-cni wrote.
func TestInstalledPluginWorks(t *testing.T) {
	h := newHost(t)
	h.leasesIn(t)
	if out, err := h.install(); err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out)
	}
	ctx := context.Background()
	if _, err := suite.CP.CreatePod(ctx, "inst", "web", node); err != nil {
		t.Fatal(err)
	}
	netns := harness.NewNetNST(t, "inst")
	if out, err := h.cnitool("add", netns, "inst", "web"); err != nil || !strings.Contains(out, "10.230.0.") {
		t.Fatalf("cnitool add with the installed files: %v\n%s", err, out)
	}
	p, err := suite.CP.Admin.CoreV1().Pods("inst").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || !strings.HasPrefix(p.Annotations["cni.projectcalico.org/podIP"], "10.230.0.") {
		t.Errorf("annotations: %v %v", p.Annotations, err)
	}
	if out, err := h.cnitool("del", netns, "inst", "web"); err != nil {
		t.Errorf("cnitool del: %v\n%s", err, out)
	}
}

// leasesIn makes the installed conflist (the image's template) keep
// host-local's leases and the plugins' state in a test directory, which it
// returns, and log under the host root.
func (h *host) leasesIn(t *testing.T) string {
	t.Helper()
	tmpl, err := os.ReadFile(filepath.Join(rootfs, "etc/kdd-cni/10-calico.conflist.template"))
	if err != nil {
		t.Fatal(err)
	}
	leases := t.TempDir()
	conf, err := harness.TemplateWith(tmpl, map[string]any{"state_dir": filepath.Join(leases, "state")},
		map[string]any{"dataDir": leases})
	if err != nil {
		t.Fatal(err)
	}
	h.env["CNI_NETWORK_CONFIG"] = conf
	delete(h.env, "CNI_NETWORK_CONFIG_FILE")
	h.env["LOG_FILE_PATH"] = filepath.Join(h.root, "cni.log")
	return leases
}

// cnitool runs the real cnitool in the node namespace with the conflist and
// binaries installed under the host root, for one pod.
func (h *host) cnitool(verb string, netns *harness.NetNS, namespace, pod string) (string, error) {
	cmd := exec.Command(filepath.Join(suite.BinDir, "cnitool"), verb, "k8s-pod-network", netns.Path)
	cmd.Env = append(os.Environ(), "NETCONFPATH="+h.path("etc/cni/net.d"), "CNI_PATH="+h.path("opt/cni/bin"),
		"CNI_ARGS=K8S_POD_NAMESPACE="+namespace+";K8S_POD_NAME="+pod)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := suite.CP.Run(cmd)
	return out.String(), err
}

func TestBadEnvironmentWritesNothing(t *testing.T) {
	for k, v := range map[string]string{"SLEEP": "maybe", "CNI_MTU": "huge", "KUBERNETES_SERVICE_PROTOCOL": "ftp", "DATASTORE_TYPE": "etcdv3"} {
		t.Run(k, func(t *testing.T) {
			h := newHost(t)
			h.env[k] = v
			out, err := h.install()
			var ee *exec.ExitError
			if !errorsAs(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, k) {
				t.Errorf("install-cni with %s=%s: %v\n%s", k, v, err, out)
			}
			if strings.Count(out, "install-cni failed") != 1 {
				t.Errorf("error must be reported once:\n%s", out)
			}
			entries, _ := os.ReadDir(h.root)
			if len(entries) != 0 {
				t.Errorf("files written despite bad input: %v", entries)
			}
		})
	}
}

// A template that does not render, a conflist the calico plugin would
// refuse, or install-cni credentials that do not load, are found before
// anything is written: no binary either.
func TestBadTemplateOrCredentialsWriteNothing(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.template")
	if err := os.WriteFile(bad, []byte(`{"name":"k8s-pod-network","plugins":[{"type":"calico","mtu":__LOG_LEVEL__}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Valid JSON that the calico plugin would refuse (kddctl validate's checks).
	refused := `{"name":"k8s-pod-network","plugins":[{"type":"calico","log_format":"xml","ipam":{"type":"host-local","subnet":"usePodCidr"}}]}`
	noIPAM := `{"name":"k8s-pod-network","plugins":[{"type":"calico","mtu":1500}]}`
	for name, env := range map[string]map[string]string{
		"template":                      {"CNI_NETWORK_CONFIG_FILE": bad},
		"credentials":                   {"KUBECONFIG": "/nonexistent/kubeconfig"},
		"conflist the plugin refuses":   {"CNI_NETWORK_CONFIG": refused},
		"conflist without an ipam type": {"CNI_NETWORK_CONFIG": noIPAM},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t)
			for k, v := range env {
				h.env[k] = v
			}
			_, conflist := env["CNI_NETWORK_CONFIG"]
			if conflist {
				delete(h.env, "CNI_NETWORK_CONFIG_FILE")
			}
			out, err := h.install()
			if err == nil {
				t.Fatalf("install-cni accepted a bad %s:\n%s", name, out)
			}
			if conflist && !strings.Contains(out, "refusing to write the conflist") {
				t.Errorf("install-cni failed for another reason:\n%s", out)
			}
			entries, _ := os.ReadDir(h.root)
			if len(entries) != 0 {
				t.Errorf("files written despite a bad %s: %v\n%s", name, entries, out)
			}
		})
	}
}

// Readers never see a partial conflist or kubeconfig, and the installed
// binary stays executable, while install-cni rewrites everything in a loop.
func TestAtomicWrites(t *testing.T) {
	h := newHost(t)
	// Two source trees whose calico differs, so every run replaces it.
	srcA, srcB := t.TempDir(), t.TempDir()
	for _, src := range []string{srcA, srcB} {
		for _, b := range []string{"calico", "host-local"} {
			data, _ := os.ReadFile(filepath.Join(rootfs, "opt/cni/bin", b))
			if b == "calico" && src == srcB {
				data = append(data, 0) // trailing byte: still a valid executable
			}
			if err := os.WriteFile(filepath.Join(src, b), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if out, err := h.install(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	stop := make(chan struct{})
	type tally struct{ reads, bad int }
	reader := func(res chan<- tally, check func() bool) {
		var tl tally
		for {
			select {
			case <-stop:
				res <- tl
				return
			default:
			}
			tl.reads++
			if !check() {
				tl.bad++
			}
		}
	}
	fileRes, execRes := make(chan tally, 1), make(chan tally, 1)
	go reader(fileRes, func() bool {
		b, err := os.ReadFile(h.path("etc/cni/net.d/10-calico.conflist"))
		if err != nil || !json.Valid(b) {
			return false
		}
		kb, err := os.ReadFile(h.path("etc/cni/net.d/calico-kubeconfig"))
		cfg, lerr := clientcmd.Load(kb)
		return err == nil && lerr == nil && cfg.AuthInfos["kdd-cni"] != nil && cfg.AuthInfos["kdd-cni"].Token != ""
	})
	go reader(execRes, func() bool {
		out, err := exec.Command(h.path("opt/cni/bin/calico"), "-v").CombinedOutput()
		if err != nil {
			t.Logf("calico -v: %v %s", err, out)
		}
		return err == nil
	})
	const runs = 30
	for i := 0; i < runs; i++ {
		h.env["CNI_BIN_SRC_DIR"] = []string{srcA, srcB}[i%2]
		h.env["CNI_MTU"] = []string{"1400", "1500"}[i%2]
		if out, err := h.install(); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, out)
		}
	}
	close(stop)
	files, execs := <-fileRes, <-execRes
	t.Logf("%d install runs; concurrent reads: %d file + %d exec, bad: %d + %d", runs, files.reads, execs.reads, files.bad, execs.bad)
	if files.bad+execs.bad != 0 || files.reads < runs || execs.reads < runs {
		t.Errorf("readers saw partial or broken files: %d, %d", files.bad, execs.bad)
	}
	leftovers, _ := filepath.Glob(h.path("*/*/*/.*tmp-*"))
	if len(leftovers) != 0 {
		t.Errorf("temp files left: %v", leftovers)
	}
}

// The conflist's cniVersion follows the runtime the kubelet reports in the
// Node's status (1.1.0 only where its results are accepted), and
// CNI_CONF_VERSION overrides it.
func TestConfVersionFollowsRuntime(t *testing.T) {
	for _, c := range []struct{ runtime, override, want string }{
		{"containerd://2.0.1", "", "1.1.0"},
		{"containerd://1.6.20~ds1", "", "1.0.0"},
		{"cri-o://1.31.2", "", "1.1.0"},
		{"cri-o://1.30.4", "", "1.0.0"},
		{"containerd://1.7.27", "1.1.0", "1.1.0"},
		{"containerd://2.0.1", "1.0.0", "1.0.0"},
	} {
		setRuntime(t, c.runtime)
		h := newHost(t)
		if c.override != "" {
			h.env["CNI_CONF_VERSION"] = c.override
		}
		if out, err := h.install(); err != nil {
			t.Fatalf("install-cni: %v\n%s", err, out)
		}
		if got := cniVersion(h.path("etc/cni/net.d/10-calico.conflist")); got != c.want {
			t.Errorf("runtime %q, CNI_CONF_VERSION %q: cniVersion %q, want %s", c.runtime, c.override, got, c.want)
		}
	}
}
