package invocation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

func env(vars map[string]string) netconf.Env {
	return netconf.Env{
		Getenv:   func(k string) string { return vars[k] },
		ReadFile: func(string) ([]byte, error) { return nil, errors.New("no file") },
		Hostname: func() (string, error) { return "host-1", nil },
	}
}

const podArgs = "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0"

func open(t *testing.T, stdin, cniArgs string, o Options) (*Frame, error) {
	t.Helper()
	if o.Env.Getenv == nil {
		o.Env = env(nil)
	}
	if o.Command == "" {
		o.Command = "ADD"
	}
	// Records and state in the test's own directory, not the host's default.
	var conf map[string]any
	if json.Unmarshal([]byte(stdin), &conf) == nil && conf["state_dir"] == nil {
		conf["state_dir"] = t.TempDir()
		b, _ := json.Marshal(conf)
		stdin = string(b)
	}
	return Open(&skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Args: cniArgs, StdinData: []byte(stdin)}, o)
}

func TestOpenResolvesOnce(t *testing.T) {
	f, err := open(t, `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico","nodename":"node-a",
		"ipam":{"type":"host-local","ranges":[[{"subnet":"usePodCidr","rangeStart":"10.0.0.5"}]]}}`,
		podArgs, Options{Env: env(map[string]string{"FELIX_INTERFACEPREFIX": "tap,cali"}), RequirePod: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.End(nil)
	if f.HostVeth != naming.HostVeth("tap", "ns", "web-0") {
		t.Errorf("host veth %q: want the FELIX_INTERFACEPREFIX prefix", f.HostVeth)
	}
	if f.HostAlias != "kdd-cni/k8s-pod-network/c1/eth0" {
		t.Errorf("alias %q", f.HostAlias)
	}
	if conf, err := f.IPAMConf(); err != nil || !conf.Families().V4 || conf.Families().V6 {
		t.Errorf("families of %v: %v", conf, err)
	}
	if node, err := f.PodCIDRNode(); err != nil || node != "node-a" {
		t.Errorf("node %q %v", node, err)
	}
	rel := string(f.ReleaseConf())
	if strings.Contains(rel, "usePodCidr") || strings.Contains(rel, "rangeStart") {
		t.Errorf("release config keeps the symbol or the range limits: %s", rel)
	}
	conf, _ := f.IPAMConf()
	b, err := conf.Rewrite(podcidr.CIDRs{V4: "10.0.0.0/24"})
	if err != nil || !strings.Contains(string(b), `"rangeStart":"10.0.0.5"`) || !strings.Contains(string(b), `"subnet":"10.0.0.0/24"`) {
		t.Errorf("rewrite after release lost keys: %s %v", b, err)
	}
}

func TestOpenRefuses(t *testing.T) {
	good := `{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"host-local","subnet":"usePodCidr"}}`
	cases := []struct {
		name, stdin, args string
		o                 Options
		code              uint
	}{
		{"bad json", `{`, podArgs, Options{}, types.ErrInvalidNetworkConfig},
		{"no pod on ADD", good, "", Options{RequirePod: true}, types.ErrInvalidEnvironmentVariables},
		{"no ipam section for the shim", `{"cniVersion":"1.0.0","name":"n","type":"podcidr"}`, podArgs, Options{IPAM: true}, types.ErrInvalidNetworkConfig},
		{"bad ranges", `{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"host-local","ranges":"x"}}`, podArgs, Options{}, types.ErrInvalidNetworkConfig},
	}
	for _, c := range cases {
		f, err := open(t, c.stdin, c.args, c.o)
		if err == nil {
			_, err = f.IPAMConf()
			f.End(nil)
		}
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		var te *types.Error
		if !errors.As(cnierror.Coded(err), &te) || te.Code != c.code {
			got := uint(0)
			if te != nil {
				got = te.Code
			}
			t.Errorf("%s: code %d, want %d (%v)", c.name, got, c.code, err)
		}
	}
	if _, err := Open(&skel.CmdArgs{ContainerID: "../x", IfName: "eth0", StdinData: []byte(good)},
		Options{Command: "DEL", Env: env(nil)}); err == nil {
		t.Error("a container ID with a path accepted")
	}
}
