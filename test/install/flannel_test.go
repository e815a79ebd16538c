package install

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

// writeSubnetEnv writes flanneld's subnet.env as flanneld does: whole, by
// rename.
func (h *host) writeSubnetEnv(t *testing.T, mtu string) {
	t.Helper()
	path := h.env["FLANNEL_SUBNET_FILE"]
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	env := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=" + mtu + "\nFLANNEL_IPMASQ=true\n"
	if err := atomicfile.Write(path, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
}

// With CNI_MTU unset (the manifest's empty veth_mtu), the pods' MTU is
// 1500 until flanneld writes its subnet.env; the sidecar then rewrites the
// conflist with FLANNEL_MTU (VXLAN: 1450), and again when it changes. A
// bad subnet.env keeps the MTU last written and is reported once. CNI_MTU,
// when set, wins over flannel.
func TestPodMTUFollowsFlannel(t *testing.T) {
	h := newHost(t)
	conflist := h.path("etc/cni/net.d/10-calico.conflist")
	// A pod's host veth from before flanneld came up, where the sidecar runs.
	old := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "calimtutest0", MTU: 1500}, PeerName: "mtutestpeer"}
	if err := suite.CP.Node.Do(func() error { return netlink.LinkAdd(old) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = suite.CP.Node.Do(func() error { return netlink.LinkDel(old) }) })
	s := startSidecar(t, h)
	waitFor(t, "the conflist with the default MTU", func() bool { return harness.ConflistMTU(conflist) == 1500 })

	h.writeSubnetEnv(t, "1450")
	waitFor(t, "the conflist with flannel's VXLAN MTU", func() bool { return harness.ConflistMTU(conflist) == 1450 })
	tokenWorks(t, h)
	if !strings.Contains(s.out.String(), "mtu=1450") {
		t.Errorf("the sidecar did not say where the MTU came from:\n%s", s.out)
	}
	if !strings.Contains(s.out.String(), "keep a larger one until they are re-created") || !strings.Contains(s.out.String(), "calimtutest0") {
		t.Errorf("the sidecar did not name the host veth with a larger MTU:\n%s", s.out)
	}

	h.writeSubnetEnv(t, "jumbo")
	time.Sleep(3 * time.Second) // three polls
	if got := harness.ConflistMTU(conflist); got != 1450 {
		t.Errorf("a bad subnet.env changed the conflist's MTU to %d", got)
	}
	if n := strings.Count(s.out.String(), `FLANNEL_MTU=\"jumbo\"`); n != 1 {
		t.Errorf("the bad subnet.env reported %d times, want once:\n%s", n, s.out)
	}

	h.writeSubnetEnv(t, "1500") // flannel's host-gw backend
	waitFor(t, "the conflist with flannel's host-gw MTU", func() bool { return harness.ConflistMTU(conflist) == 1500 })
	s.stop(t, syscall.SIGTERM)

	h.env["SLEEP"], h.env["CNI_MTU"] = "false", "1400"
	h.writeSubnetEnv(t, "1450")
	if out, err := h.install(); err != nil {
		t.Fatalf("install with CNI_MTU: %v\n%s", err, out)
	}
	if got := harness.ConflistMTU(conflist); got != 1400 {
		t.Errorf("CNI_MTU=1400 with flannel's 1450: conflist MTU %d", got)
	}
}

// Another network's configuration that sorts before ours would network
// every new pod instead of kdd-cni: install-cni says so, by name. One that
// sorts after (flannel's 10-flannel.conflist) is never used by the runtime
// and is not reported. install-cni touches neither.
func TestOtherNetworkConfs(t *testing.T) {
	h := newHost(t)
	dir := h.path("etc/cni/net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	others := map[string]string{
		"05-other.conflist":   `{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}`,
		"10-flannel.conflist": `{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
	}
	for name, text := range others {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := h.install()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	var warning string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "sorts before ours") {
			warning = line
		}
	}
	if !strings.Contains(warning, "05-other.conflist") || strings.Contains(warning, "10-flannel.conflist") {
		t.Errorf("want a warning naming 05-other.conflist only, got %q\n%s", warning, out)
	}
	for name, text := range others {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != text {
			t.Errorf("%s changed: %v %q", name, err, b)
		}
	}

	// With the other network gone, nothing is reported.
	if err := os.Remove(filepath.Join(dir, "05-other.conflist")); err != nil {
		t.Fatal(err)
	}
	if out, err = h.install(); err != nil || strings.Contains(out, "sorts before ours") {
		t.Errorf("install without a conflist before ours: %v\n%s", err, out)
	}
}
