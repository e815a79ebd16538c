// Package conformance drives kdd-cni with the real cnitool (libcni), as a
// runtime would, for every CNI spec version the plugins advertise: add,
// check (with libcni's cached prevResult), del, del again, gc, status. It
// runs the shipped conflist (calico + portmap) and ptp + the podcidr shim.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// Versions every kdd-cni binary advertises.
var Versions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

var suite *harness.Suite

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, harness.Options{}, func(s *harness.Suite) error { suite = s; return nil }))
}

func TestVersionOutput(t *testing.T) {
	harness.RequireRoot(t)
	for _, bin := range []string{"calico", "podcidr"} {
		cmd := exec.Command(filepath.Join(suite.BinDir, bin))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
		cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s VERSION: %v", bin, err)
		}
		var v struct {
			CNIVersion string   `json:"cniVersion"`
			Supported  []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(v.Supported, Versions) {
			t.Errorf("%s supports %v, want exactly %v", bin, v.Supported, Versions)
		}
	}
}

// network is one conflist under test.
type network struct {
	name string
	conf func(ver, node, dataDir string) map[string]any
}

var networks = []network{
	{"calico+portmap", calicoConflist},
	{"ptp+podcidr", ptpConflist},
}

func calicoConflist(ver, node, dataDir string) map[string]any {
	tmpl, err := os.ReadFile(filepath.Join(harness.RepoRoot(), "conf", "10-calico.conflist.template"))
	if err != nil {
		panic(err)
	}
	rendered := strings.NewReplacer("__LOG_LEVEL__", "debug", "__LOG_FILE_PATH__", filepath.Join(dataDir, "cni.log"),
		"__DATASTORE_TYPE__", "kubernetes", "__KUBERNETES_NODE_NAME__", node, "__CNI_MTU__", "1500",
		"__KUBECONFIG_FILEPATH__", suite.Kubeconfig).Replace(string(tmpl))
	var list map[string]any
	if err := json.Unmarshal([]byte(rendered), &list); err != nil {
		panic(err)
	}
	list["cniVersion"] = ver
	ipam := list["plugins"].([]any)[0].(map[string]any)["ipam"].(map[string]any)
	delete(ipam, "subnet")
	ipam["ranges"] = dualRanges()
	ipam["dataDir"] = dataDir
	list["plugins"].([]any)[0].(map[string]any)["state_dir"] = filepath.Join(dataDir, "state")
	list["plugins"].([]any)[1].(map[string]any)["backend"] = "nftables"
	return list
}

func ptpConflist(ver, node, dataDir string) map[string]any {
	return map[string]any{
		"cniVersion": ver, "name": "k8s-pod-network",
		"plugins": []any{map[string]any{
			"type": "ptp", "ipMasq": false,
			"ipam": map[string]any{
				"type": "podcidr", "nodename": node, "kubernetes": map[string]any{"kubeconfig": suite.Kubeconfig},
				"ranges": dualRanges(), "dataDir": dataDir, "state_dir": filepath.Join(dataDir, "state"),
			},
		}},
	}
}

func dualRanges() []any {
	return []any{[]any{map[string]any{"subnet": "usePodCidr"}}, []any{map[string]any{"subnet": "usePodCidrIPv6"}}}
}

func TestCNIToolLifecycle(t *testing.T) {
	harness.RequireRoot(t)
	n := 0
	for _, nw := range networks {
		for _, ver := range Versions {
			n++
			t.Run(nw.name+"/"+ver, func(t *testing.T) { lifecycle(t, nw, ver, n) })
		}
	}
}

func lifecycle(t *testing.T, nw network, ver string, n int) {
	ctx := context.Background()
	node := fmt.Sprintf("conf-node-%d", n)
	podCIDRs := []string{fmt.Sprintf("10.210.%d.0/24", n), fmt.Sprintf("fd00:210:%x::/64", n)}
	if _, err := suite.CP.CreateNode(ctx, node, podCIDRs...); err != nil {
		t.Fatal(err)
	}
	pod := fmt.Sprintf("pod-%d", n)
	if _, err := suite.CP.CreatePod(ctx, "conformance", pod, node); err != nil {
		t.Fatal(err)
	}
	dataDir, netDir := t.TempDir(), t.TempDir()
	b, _ := json.MarshalIndent(nw.conf(ver, node, dataDir), "", "  ")
	if err := os.WriteFile(filepath.Join(netDir, "10-net.conflist"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	netns := harness.NewNetNST(t, "conf")
	cnitool := func(verb string) (string, error) {
		cmd := exec.Command(filepath.Join(suite.BinDir, "cnitool"), verb, "k8s-pod-network", netns.Path)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+netDir, "CNI_PATH="+suite.BinDir,
			"CNI_ARGS=K8S_POD_NAMESPACE=conformance;K8S_POD_NAME="+pod)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := suite.CP.Run(cmd)
		if err != nil {
			err = fmt.Errorf("cnitool %s: %w: %s", verb, err, out.String())
		}
		return out.String(), err
	}

	out, err := cnitool("add")
	if err != nil {
		t.Fatal(err)
	}
	validateResult(t, ver, []byte(out), podCIDRs)
	if ok, _ := version.GreaterThanOrEqualTo(ver, "0.4.0"); ok {
		if _, err := cnitool("check"); err != nil {
			t.Errorf("check: %v", err)
		}
	}
	if _, err := cnitool("status"); err != nil {
		t.Errorf("status: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := cnitool("del"); err != nil {
			t.Errorf("del #%d: %v", i+1, err)
		}
	}
	if _, err := cnitool("gc"); err != nil {
		t.Errorf("gc: %v", err)
	}
	leases, _ := filepath.Glob(filepath.Join(dataDir, "k8s-pod-network", "*[0-9a-f]"))
	var held []string
	for _, l := range leases {
		if net.ParseIP(filepath.Base(l)) != nil {
			held = append(held, filepath.Base(l))
		}
	}
	if len(held) != 0 {
		t.Errorf("leases after del: %v", held)
	}
}

// validateResult decodes the result with the spec library for its version
// and checks what every version must carry.
func validateResult(t *testing.T, ver string, out []byte, podCIDRs []string) {
	t.Helper()
	res, err := version.NewResult(ver, out)
	if err != nil {
		t.Fatalf("result does not decode as %s: %v\n%s", ver, err, out)
	}
	if res.Version() != ver {
		t.Errorf("result version %s, want %s", res.Version(), ver)
	}
	var raw struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Version   string `json:"version"`
			Address   string `json:"address"`
			Interface *int   `json:"interface"`
			Gateway   string `json:"gateway"`
		} `json:"ips"`
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.CNIVersion != ver || len(raw.IPs) != 2 || len(raw.Interfaces) < 2 {
		t.Fatalf("result: %s", out)
	}
	old := ver == "0.3.0" || ver == "0.3.1" || ver == "0.4.0" // ips[].version was dropped in 1.0.0
	for i, ip := range raw.IPs {
		if old != (ip.Version != "") {
			t.Errorf("ips[%d].version %q in a %s result", i, ip.Version, ver)
		}
		addr, _, err := net.ParseCIDR(ip.Address)
		if err != nil {
			t.Errorf("ips[%d].address %q", i, ip.Address)
			continue
		}
		_, n, _ := net.ParseCIDR(podCIDRs[i])
		if !n.Contains(addr) {
			t.Errorf("%s outside podCIDR %s", addr, n)
		}
		if ip.Interface == nil || *ip.Interface >= len(raw.Interfaces) || raw.Interfaces[*ip.Interface].Sandbox == "" {
			t.Errorf("ips[%d] does not point at the sandbox interface: %s", i, out)
		}
	}
}
