package render

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
)

func cfg(t *testing.T) *config.Config {
	c, err := config.Load(func(k string) string {
		return map[string]string{"POD_NAMESPACE": "kube-system", "KUBERNETES_NODE_NAME": "node-1",
			"CNI_NETWORK_CONFIG": "{}", "CNI_MTU": "1450"}[k]
	}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const tmpl = `{"name":"k8s-pod-network","cniVersion":"1.1.0","plugins":[{"type":"calico","nodename":"__KUBERNETES_NODE_NAME__",
 "mtu":__CNI_MTU__,"log_level":"__LOG_LEVEL__","kubernetes":{"kubeconfig":"__KUBECONFIG_FILEPATH__"},
 "policy":{"k8s_auth_token":"__SERVICEACCOUNT_TOKEN__"},"ipam":{"type":"host-local","subnet":"usePodCidr"}}]}`

func TestConflist(t *testing.T) {
	out, err := Conflist(tmpl, Values(cfg(t), "https://10.0.0.1:443"), "tok")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Plugins []struct {
			Nodename   string `json:"nodename"`
			MTU        int    `json:"mtu"`
			Kubernetes struct {
				Kubeconfig string `json:"kubeconfig"`
			} `json:"kubernetes"`
			Policy struct {
				Token string `json:"k8s_auth_token"`
			} `json:"policy"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	p := v.Plugins[0]
	if p.Nodename != "node-1" || p.MTU != 1450 || p.Kubernetes.Kubeconfig != "/etc/cni/net.d/calico-kubeconfig" || p.Policy.Token != "tok" {
		t.Errorf("%s", out)
	}
}

func TestConflistErrors(t *testing.T) {
	if _, err := Conflist(`{"name":"x","type":"calico","a":"__NOT_A_THING__"}`, Values(cfg(t), ""), ""); err == nil || !strings.Contains(err.Error(), "__NOT_A_THING__") {
		t.Errorf("unknown placeholder: %v", err)
	}
	_, err := Conflist(`{"name":"x","secret":"__SERVICEACCOUNT_TOKEN__",`, Values(cfg(t), ""), "s3cr3t")
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("invalid JSON error must not quote the contents: %v", err)
	}
	if _, err := Conflist(`{"cniVersion":"1.0.0"}`, Values(cfg(t), ""), ""); err == nil {
		t.Error("conflist without name accepted")
	}
}

func TestKubeconfigLoads(t *testing.T) {
	b := Kubeconfig("https://[fd00::1]:6443", []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), false, "a.b.c")
	cfg, err := clientcmd.Load(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	cl := cfg.Clusters["local"]
	if cl.Server != "https://[fd00::1]:6443" || len(cl.CertificateAuthorityData) == 0 || cfg.AuthInfos["kdd-cni"].Token != "a.b.c" {
		t.Errorf("%+v", cfg)
	}
	cfg, _ = clientcmd.Load(Kubeconfig("https://h:1", nil, true, "t"))
	if !cfg.Clusters["local"].InsecureSkipTLSVerify {
		t.Error("insecure")
	}
}

// TestKubeconfigSameForBothLoaders: the plugins' loader and clientcmd read
// the same server, CA and token from the file install-cni writes.
func TestKubeconfigSameForBothLoaders(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, server := range []string{"https://10.96.0.1:443", "https://[fd00::1]:6443"} {
		path := filepath.Join(t.TempDir(), "calico-kubeconfig")
		if err := os.WriteFile(path, Kubeconfig(server, ca, false, "a.b.c"), 0o600); err != nil {
			t.Fatal(err)
		}
		ours, err := kube.New(kube.Access{Kubeconfig: path})
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := kubeclient.New(kube.Access{Kubeconfig: path}, "")
		if err != nil {
			t.Fatal(err)
		}
		theirCA, err := theirs.CAData()
		if err != nil {
			t.Fatal(err)
		}
		if ours.Server() != server || theirs.Config.Host != server || !bytes.Equal(ours.CAData(), ca) || !bytes.Equal(theirCA, ca) ||
			ours.BearerToken() != "a.b.c" || theirs.Config.BearerToken != "a.b.c" {
			t.Errorf("plugins: %s %q; clientcmd: %s %q", ours.Server(), ours.BearerToken(), theirs.Config.Host, theirs.Config.BearerToken)
		}
	}
}

func TestWithVersion(t *testing.T) {
	out, err := WithVersion([]byte(`{"name":"n","cniVersion":"1.1.0","plugins":[{"type":"calico","mtu":1500}]}`), "1.0.0")
	if err != nil || !strings.Contains(string(out), `"cniVersion": "1.0.0"`) || !strings.Contains(string(out), `"mtu": 1500`) {
		t.Errorf("%s %v", out, err)
	}
	if same, _ := WithVersion([]byte(`{"a":1}`), ""); string(same) != `{"a":1}` {
		t.Error("empty version must leave the conflist alone")
	}
}

// A value can never inject keys: KUBERNETES_NODE_NAME carrying a quote
// stays the nodename, the datastore stays kubernetes.
func TestConflistEscapesValues(t *testing.T) {
	c := cfg(t)
	c.NodeName = `evil","datastore_type":"etcdv3","x":"`
	out, err := Conflist(`{"name":"n","plugins":[{"type":"calico","datastore_type":"kubernetes","nodename":"__KUBERNETES_NODE_NAME__"}]}`, Values(c, ""), "")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if p := v.Plugins[0]; p["datastore_type"] != "kubernetes" || p["nodename"] != c.NodeName || len(p) != 3 {
		t.Errorf("injection: %s", out)
	}
	// In a bare position a string cannot become JSON.
	c.LogLevel = `1, "datastore_type": "etcdv3"`
	if _, err := Conflist(`{"name":"n","type":"calico","n":__LOG_LEVEL__}`, Values(c, ""), ""); err == nil {
		t.Error("a bare placeholder accepted a value that is not a JSON literal")
	}
}

func TestCNIVersionFor(t *testing.T) {
	for in, want := range map[string]string{
		"containerd://2.0.1":        "1.1.0",
		"containerd://2.2.9":        "1.1.0",
		"containerd://v2.1.0":       "1.1.0",
		"containerd://1.7.27":       "1.0.0",
		"containerd://1.6.20~ds1":   "1.0.0",
		"cri-o://1.31.0":            "1.1.0",
		"cri-o://1.34.2":            "1.1.0",
		"cri-o://1.30.9":            "1.0.0",
		"docker://28.0.1":           "1.0.0",
		"":                          "1.0.0",
		"containerd://unknown":      "1.0.0",
		"containerd://10.0.0":       "1.1.0",
		"remote://containerd/2.0.0": "1.0.0",
	} {
		if got := CNIVersionFor(in); got != want {
			t.Errorf("CNIVersionFor(%q) = %s, want %s", in, got, want)
		}
	}
}
