package config

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"
)

func load(env map[string]string) (*Config, error) {
	files := map[string]string{DefaultTemplateFile: `{"name":"x","plugins":[]}`, saDir + "/namespace": "kube-system\n"}
	return Load(func(k string) string { return env[k] },
		func(p string) ([]byte, error) {
			if v, ok := files[p]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		},
		func() (string, error) { return "Host-1", nil })
}

func TestDefaults(t *testing.T) {
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostRoot != "/host" || c.ConfName != "10-calico.conflist" || !c.Sleep || !c.UpdateBins || c.MTU != 1500 ||
		c.NodeName != "host-1" || c.Namespace != "kube-system" || c.ServiceAccount != DefaultServiceAccount ||
		c.TokenTTL != 24*time.Hour || c.KubeconfigHostPath() != "/etc/cni/net.d/calico-kubeconfig" || c.Server() != "" ||
		c.MetricsBindAddress != "" || c.RuntimeEndpoint != "unix:///run/containerd/containerd.sock" ||
		c.ReclaimInterval != 5*time.Minute || c.ReclaimGrace != 2*time.Minute ||
		!c.MTUFromFlannel || c.FlannelSubnetFile != "/run/flannel/subnet.env" {
		t.Errorf("defaults: %+v", c)
	}
	// CNI_MTU set, even to 0 (the host's), overrides flannel's MTU.
	for _, v := range []string{"1400", "0"} {
		if c, err := load(map[string]string{"CNI_MTU": v}); err != nil || c.MTUFromFlannel {
			t.Errorf("CNI_MTU=%s: MTUFromFlannel %v, %v", v, c.MTUFromFlannel, err)
		}
	}
	if _, err := load(map[string]string{"FLANNEL_SUBNET_FILE": "run/flannel/subnet.env"}); err == nil ||
		!strings.Contains(err.Error(), "FLANNEL_SUBNET_FILE") {
		t.Errorf("relative FLANNEL_SUBNET_FILE: %v", err)
	}
	c, _ = load(map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443",
		"SKIP_CNI_BINARIES": "portmap, loopback", "CNI_NETWORK_CONFIG": `{"name":"y","type":"calico"}`})
	if c.Server() != "https://[fd00::1]:6443" || !c.SkipBins["portmap"] || !c.SkipBins["loopback"] || !strings.Contains(c.Template, `"y"`) {
		t.Errorf("%+v", c)
	}
}

func TestBadValues(t *testing.T) {
	for k, v := range map[string]string{
		"SLEEP": "maybe", "UPDATE_CNI_BINARIES": "yes please", "CNI_MTU": "big", "CNI_TOKEN_TTL": "1m",
		"DATASTORE_TYPE": "etcdv3", "KUBERNETES_SERVICE_PROTOCOL": "ftp", "KUBERNETES_SERVICE_PORT": "0",
		"CNI_CONF_NAME": "../evil", "CNI_NET_DIR": "relative", "CNI_NETWORK_CONFIG_FILE": "/missing",
		"LOG_FILE_MAX_SIZE": "-1", "CNI_CONF_VERSION": "2.0.0",
		"METRICS_BIND_ADDRESS": "9097", "CONTAINER_RUNTIME_ENDPOINT": "tcp://1.2.3.4:1",
		"LEAK_RECLAIM_INTERVAL": "soon", "LEAK_RECLAIM_GRACE": "1s",
	} {
		_, err := load(map[string]string{k: v})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: got %v", k, v, err)
		}
	}
	for k, v := range map[string]string{"CNI_MTU": "50"} {
		_, err := load(map[string]string{k: v})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: got %v", k, v, err)
		}
	}
	// An IPv6 node IP: joined with its brackets, or refused with a hint.
	for env, want := range map[[2]string]string{
		{"fd00::10", "9097"}: "[fd00::10]:9097", {"10.0.0.4", "9097"}: "10.0.0.4:9097", {"", "9097"}: ":9097",
	} {
		c, err := load(map[string]string{"METRICS_HOST": env[0], "METRICS_PORT": env[1]})
		if err != nil || c.MetricsBindAddress != want {
			t.Errorf("METRICS_HOST=%q METRICS_PORT=%q: %q %v, want %q", env[0], env[1], c.MetricsBindAddress, err, want)
		}
	}
	if _, err := load(map[string]string{"METRICS_BIND_ADDRESS": "fd00::10:9097"}); err == nil || !strings.Contains(err.Error(), "brackets") {
		t.Errorf("an unbracketed IPv6 address: %v", err)
	}
	// Several problems are reported together.
	_, err := load(map[string]string{"SLEEP": "x", "CNI_MTU": "y"})
	if err == nil || !strings.Contains(err.Error(), "SLEEP") || !strings.Contains(err.Error(), "CNI_MTU") {
		t.Errorf("joined errors: %v", err)
	}
	_, err = Load(func(string) string { return "" }, func(string) ([]byte, error) { return nil, fs.ErrNotExist },
		func() (string, error) { return "", errors.New("no") })
	if err == nil || !strings.Contains(err.Error(), "POD_NAMESPACE") {
		t.Errorf("missing namespace: %v", err)
	}
}
