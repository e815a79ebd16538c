package netconf

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func testEnv(vars map[string]string, files map[string]string) Env {
	return Env{
		Getenv: func(k string) string { return vars[k] },
		ReadFile: func(p string) ([]byte, error) {
			if v, ok := files[p]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		},
		Hostname: func() (string, error) { return "OS-Host", nil },
	}
}

const calicoConf = `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico",
 "log_level":"info","log_file_path":"/var/log/calico/cni/cni.log","datastore_type":"kubernetes",
 "nodename":"node-1","mtu":1450,"ipam":{"type":"host-local","subnet":"usePodCidr","routes":[{"dst":"10.0.0.0/8"}]},
 "policy":{"type":"k8s"},"kubernetes":{"kubeconfig":"/etc/cni/net.d/calico-kubeconfig"},
 "calico_api_group":"crd.projectcalico.org/v1","something_unknown":{"x":1}}`

func TestLoadCalicoConf(t *testing.T) {
	c, err := Load([]byte(calicoConf), testEnv(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodename != "node-1" || c.MTU != 1450 || c.NumQueues != 1 || c.IPAM.Type != "host-local" ||
		c.Kubernetes.Kubeconfig != "/etc/cni/net.d/calico-kubeconfig" || c.Policy.Type != "k8s" {
		t.Errorf("unexpected config: %+v", c)
	}
	if len(c.IPAMRoutes) != 1 || c.IPAMRoutes[0] != "10.0.0.0/8" {
		t.Errorf("ipam routes: %v", c.IPAMRoutes)
	}
}

func TestLoadErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		conf string
		env  map[string]string
		want string
	}{
		"malformed":      {`{"name":`, nil, "failed to parse network configuration"},
		"etcd":           {`{"name":"n","datastore_type":"etcdv3","ipam":{"type":"host-local"}}`, nil, `unsupported datastore_type "etcdv3"`},
		"etcd from conf": {`{"name":"n","etcd_endpoints":"http://x:2379","ipam":{"type":"host-local"}}`, nil, `unsupported datastore_type "etcdv3"`},
		"etcd from env":  {`{"name":"n","ipam":{"type":"host-local"}}`, map[string]string{"ETCD_ENDPOINTS": "http://x"}, `unsupported datastore_type "etcdv3"`},
		"env datastore":  {`{"name":"n","ipam":{"type":"host-local"}}`, map[string]string{"CALICO_DATASTORE_TYPE": "etcdv3"}, "unsupported datastore_type"},
		"no ipam":        {`{"name":"n"}`, nil, "ipam.type is required"},
		"bad name":       {`{"name":"a b","ipam":{"type":"host-local"}}`, nil, "invalid network name"},
		"bad mtu":        {`{"name":"n","mtu":-1,"ipam":{"type":"host-local"}}`, nil, "invalid mtu"},
		"bad queues":     {`{"name":"n","num_queues":-2,"ipam":{"type":"host-local"}}`, nil, "invalid num_queues"},
		"netkit":         {`{"name":"n","device_type":"netkit","ipam":{"type":"host-local"}}`, nil, "unsupported device_type"},
		"route no dst":   {`{"name":"n","ipam":{"type":"host-local","routes":[{"gw":"1.2.3.4"}]}}`, nil, "ipam.routes[0]"},
		"wrong type mtu": {`{"name":"n","mtu":"big","ipam":{"type":"host-local"}}`, nil, "failed to parse"},
		"policy wait <0": {`{"name":"n","policy_setup_timeout_seconds":-1,"ipam":{"type":"host-local"}}`, nil, "invalid policy_setup_timeout_seconds -1"},
		"bad gate":       {`{"name":"n","readiness_gates":["not a url"],"ipam":{"type":"host-local"}}`, nil, "invalid readiness_gates[0]"},
		"ftp gate":       {`{"name":"n","readiness_gates":["ftp://x/y"],"ipam":{"type":"host-local"}}`, nil, "invalid readiness_gates[0]"},
		"relative state": {`{"name":"n","state_dir":"var/lib/x","ipam":{"type":"host-local"}}`, nil, "state_dir"},
		"policy type":    {`{"name":"n","policy":{"type":"calico"},"ipam":{"type":"host-local"}}`, nil, `unsupported policy.type "calico"`},
		"grpc dataplane": {`{"name":"n","dataplane_options":{"type":"grpc"},"ipam":{"type":"host-local"}}`, nil, "unsupported dataplane_options"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load([]byte(tc.conf), testEnv(tc.env, nil))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestResolveNodename(t *testing.T) {
	base := func(extra string) *NetConf {
		c, err := Load([]byte(`{"name":"n","ipam":{"type":"host-local"}`+extra+`}`), testEnv(nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	files := map[string]string{DefaultNodenameFile: "from-file\n"}
	for name, tc := range map[string]struct {
		conf    *NetConf
		files   map[string]string
		want    string
		wantErr string
	}{
		"configured wins, file missing": {conf: base(`,"nodename":"cfg"`), want: "cfg"},
		"file, trimmed":                 {conf: base(``), files: files, want: "from-file"},
		"file missing":                  {conf: base(``), wantErr: "does not exist"},
		"file optional, hostname":       {conf: base(`,"nodename_file_optional":true`), want: "os-host"},
		"file optional, deprecated":     {conf: base(`,"nodename_file_optional":true,"hostname":"h"`), want: "h"},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tc.conf.ResolveNodename(testEnv(nil, tc.files))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if n := base(`,"kubernetes":{"node_name":"other"}`).PodCIDRNode("me"); n != "other" {
		t.Errorf("PodCIDRNode = %q", n)
	}
}

func TestEffectiveMTU(t *testing.T) {
	c, _ := Load([]byte(`{"name":"n","ipam":{"type":"host-local"}}`), testEnv(nil, nil))
	for name, tc := range map[string]struct {
		file    string
		require bool
		mtu     int
		want    int
		wantErr bool
	}{
		"configured":                 {mtu: 9000, file: "1400", want: 9000},
		"configured, garbage file":   {mtu: 9000, file: "x", want: 9000},
		"from file":                  {file: "1400\n", want: 1400},
		"no file":                    {want: 0},
		"required, missing":          {require: true, wantErr: true},
		"required, configured":       {require: true, mtu: 9000, file: "1400", want: 9000},
		"required, configured, none": {require: true, mtu: 9000, wantErr: true},
		"required, configured, bad":  {require: true, mtu: 9000, file: "0", wantErr: true},
		"garbage":                    {file: "x", wantErr: true},
	} {
		t.Run(name, func(t *testing.T) {
			cc := *c
			cc.MTU, cc.RequireMTUFile = tc.mtu, tc.require
			files := map[string]string{}
			if tc.file != "" {
				files[DefaultMTUFile] = tc.file
			}
			got, err := cc.EffectiveMTU(testEnv(nil, files))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v", got, err)
			}
		})
	}
}

func TestAPIAccess(t *testing.T) {
	c, _ := Load([]byte(`{"name":"n","ipam":{"type":"host-local"},"policy":{"k8s_api_root":"https://1.2.3.4:6443/api/v1/"}}`), testEnv(nil, nil))
	a := c.APIAccess(testEnv(map[string]string{"KUBECONFIG": "/kc", "K8S_TOKEN": "t", "CALICO_K8S_CA_FILE": "/ca"}, nil), time.Second)
	if a.Kubeconfig != "/kc" || a.Server != "https://1.2.3.4:6443" || a.Token != "t" || a.CAFile != "/ca" {
		t.Errorf("%+v", a)
	}
	c.Kubernetes.Kubeconfig = "/netconf-wins"
	if a := c.APIAccess(testEnv(map[string]string{"KUBECONFIG": "/kc"}, nil), time.Second); a.Kubeconfig != "/netconf-wins" {
		t.Errorf("netconf must win over env: %+v", a)
	}
}

func TestParseIdentityRejectsNonNames(t *testing.T) {
	for _, args := range []string{
		"K8S_POD_NAMESPACE=x/../../../../etc/cron.d;K8S_POD_NAME=p",
		"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=../../etc/passwd",
		"K8S_POD_NAMESPACE=Upper;K8S_POD_NAME=p",
		"K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a b",
		"K8S_POD_NAMESPACE=ns.dots;K8S_POD_NAME=p",
		"K8S_POD_NAMESPACE=" + strings.Repeat("a", 64) + ";K8S_POD_NAME=p",
	} {
		if _, err := ParseIdentity(args); err == nil || errors.Is(err, ErrNoPod) {
			t.Errorf("%s: err = %v, want a name error", args, err)
		}
	}
	if _, err := ParseIdentity("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=web-0.x"); err != nil {
		t.Errorf("valid names refused: %v", err)
	}
}

func TestParseIdentity(t *testing.T) {
	id, err := ParseIdentity("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u;SOMETHING=x")
	if err != nil || id.Namespace != "ns" || id.Pod != "p" {
		t.Fatalf("%+v %v", id, err)
	}
	if _, err := ParseIdentity("K8S_POD_NAME=p"); !errors.Is(err, ErrNoPod) {
		t.Errorf("missing namespace: %v", err)
	}
	if _, err := ParseIdentity("garbage"); err == nil {
		t.Errorf("malformed CNI_ARGS accepted")
	}
	if got := WithIgnoreUnknown("IgnoreUnknown=1;A=b"); got != "IgnoreUnknown=1;A=b" {
		t.Errorf("%q", got)
	}
}

func TestLoadForIPAM(t *testing.T) {
	conf := `{"cniVersion":"1.1.0","name":"net","type":"ptp","nodename":"top","kubernetes":{"kubeconfig":"/top"},
	  "ipam":{"type":"podcidr","nodename":"from-ipam","kubernetes":{"node_name":"cidr-node"},"subnet":"usePodCidr","state_dir":"/ipam-state"}}`
	c, err := LoadForIPAM([]byte(conf), testEnv(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Nodename != "from-ipam" || c.Kubernetes.Kubeconfig != "/top" || c.Kubernetes.NodeName != "cidr-node" || c.StateDir != "/ipam-state" {
		t.Errorf("overlay: %+v", c)
	}
	if _, err := LoadForIPAM([]byte(`{"name":"n","ipam":{"type":"podcidr","datastore_type":"etcdv3"}}`), testEnv(nil, nil)); err == nil {
		t.Error("etcdv3 in the ipam section accepted")
	}
	gcConf := func(s string) *NetConf {
		c, err := Load([]byte(s), testEnv(nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	valid, given := gcConf(`{"name":"n","ipam":{"type":"host-local"},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`).ValidAttachments()
	if !given || len(valid) != 1 {
		t.Errorf("valid attachments: %v %v", valid, given)
	}
	if _, given := gcConf(`{"name":"n","ipam":{"type":"host-local"}}`).ValidAttachments(); given {
		t.Error("absent key reported as given")
	}
	if v, given := gcConf(`{"name":"n","ipam":{"type":"host-local"},"cni.dev/valid-attachments":[]}`).ValidAttachments(); !given || len(v) != 0 {
		t.Error("empty list must be given and empty")
	}
}

func TestLoadCalicoExtras(t *testing.T) {
	c, err := Load([]byte(`{"name":"n","ipam":{"type":"host-local"},"policy_setup_timeout_seconds":5,
	 "readiness_gates":["http://127.0.0.1:9099/readiness"],"qps":50,"burst":100,
	 "runtimeConfig":{"io.kubernetes.cri.pod-annotations":{"cni.projectcalico.org/hwAddr":"c2:00:00:00:00:01"}}}`), testEnv(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.PolicySetupTimeoutSeconds != 5 || c.EndpointStatusDir != DefaultEndpointStatusDir || len(c.ReadinessGates) != 1 {
		t.Errorf("unexpected config: %+v", c)
	}
	if got := c.RuntimeConfig.PodAnnotations["cni.projectcalico.org/hwAddr"]; got != "c2:00:00:00:00:01" {
		t.Errorf("pod annotations from runtimeConfig: %q", got)
	}
	c, err = Load([]byte(`{"name":"n","ipam":{"type":"host-local"}}`), testEnv(nil, nil))
	if err != nil || c.RuntimeConfig.PodAnnotations != nil {
		t.Errorf("without runtimeConfig the annotations must be nil (read from the API): %v %v", err, c.RuntimeConfig.PodAnnotations)
	}
}

func TestFromConflist(t *testing.T) {
	list := []byte(`{"name":"net","cniVersion":"1.0.0","plugins":[{"type":"calico","mtu":1450,"ipam":{"type":"host-local"}},{"type":"portmap"}]}`)
	b, err := FromConflist(list, "calico")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(b, testEnv(nil, nil))
	if err != nil || c.Name != "net" || c.CNIVersion != "1.0.0" || c.MTU != 1450 || c.IPAM.Type != "host-local" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{`{"plugins":[{"type":"calico"}]}`, `{"name":"n","plugins":[{"type":"bridge"}]}`, `[`} {
		if _, err := FromConflist([]byte(bad), "calico"); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestLogFormat(t *testing.T) {
	base := `{"cniVersion":"1.0.0","name":"n","type":"calico","ipam":{"type":"host-local"},"log_format":%q}`
	for f, ok := range map[string]bool{"": true, "json": true, "text": true, "yaml": false} {
		if _, err := Load([]byte(fmt.Sprintf(base, f)), testEnv(nil, nil)); (err == nil) != ok {
			t.Errorf("log_format %q: %v", f, err)
		}
	}
}
