package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func kddctl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return kddctlWith(t, "", args...) // only --kubeconfig
}

// kddctlWith runs kddctl with $KUBECONFIG set to kubeconfigs.
func kddctlWith(t *testing.T, kubeconfigs string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kddctl"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigs, "HOME="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cluster.Run(cmd)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func TestKddctl(t *testing.T) {
	e := newEnv(t, podCIDRs("dual")...)
	delete(e.ipam, "subnet")
	e.ipam["ranges"] = rangesFor("dual")
	p := e.newPod("nginx-abc", false)
	e.add(p)
	defer e.del(p)
	admin := cluster.AdminKubeconfig

	out, code := kddctl(t, "get", "wep", "-n", e.ns, "--kubeconfig", admin)
	want := fmt.Sprintf("%s k8s %s.nginx-abc eth0", e.node, e.ns)
	if code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), want) || !strings.HasPrefix(strings.Join(strings.Fields(out), " "), "HOSTNAME ORCHESTRATOR WORKLOAD NAME") {
		t.Errorf("get wep (%d):\n%s\nwant a row %q", code, out, want)
	}
	out, _ = kddctl(t, "get", "workloadendpoints", "-n", e.ns, "-o", "wide", "--kubeconfig", admin)
	wepName := strings.ReplaceAll(e.node, "-", "--") + "-k8s-nginx--abc-eth0"
	for _, w := range []string{wepName, p.IPs()[0].String() + "/32", p.IPs()[1].String() + "/128", p.HostVeth} {
		if !strings.Contains(out, w) {
			t.Errorf("get wep -o wide lacks %s:\n%s", w, out)
		}
	}
	out, _ = kddctl(t, "get", "wep", "-A", "-o", "json", "--kubeconfig", admin)
	var list struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
			Spec     struct {
				ContainerID string `json:"containerID"`
			} `json:"spec"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	found := false
	for _, it := range list.Items {
		found = found || (it.Metadata.Name == wepName && it.Spec.ContainerID == p.ContainerID)
	}
	if !found {
		t.Errorf("-A -o json lacks %s:\n%s", wepName, out)
	}

	// As kubectl: $KUBECONFIG's files merged (the CNI's first, so its
	// context is current), --context picks the admin's from the second
	// file, and that context's namespace is the default for get.
	cfg, err := clientcmd.LoadFromFile(admin)
	if err != nil {
		t.Fatal(err)
	}
	// Names of its own: where both files name a user or cluster alike, the
	// first file's wins (as in kubectl).
	adm := *cfg.Contexts[cfg.CurrentContext]
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{"adm-user": cfg.AuthInfos[adm.AuthInfo]}
	cfg.Clusters = map[string]*clientcmdapi.Cluster{"adm-cluster": cfg.Clusters[adm.Cluster]}
	adm.AuthInfo, adm.Cluster, adm.Namespace = "adm-user", "adm-cluster", e.ns
	cfg.Contexts = map[string]*clientcmdapi.Context{"adm": &adm}
	cfg.CurrentContext = "adm"
	second := filepath.Join(t.TempDir(), "admin-with-namespace")
	if err := clientcmd.WriteToFile(*cfg, second); err != nil {
		t.Fatal(err)
	}
	merged := kubeconfig + ":" + second
	if out, code = kddctlWith(t, merged, "get", "wep", "--context", "adm"); code != 0 || !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
		t.Errorf("get wep --context adm over KUBECONFIG=%s (%d):\n%s\nwant a row %q", merged, code, out, want)
	}
	if out, code = kddctlWith(t, merged, "get", "wep"); code != 1 || !strings.Contains(out, "forbidden") {
		t.Errorf("get wep as the current context (the CNI identity, which may not list pods) (%d):\n%s", code, out)
	}

	// check: the CNI identity has exactly what it needs; admin has more.
	out, code = kddctl(t, "check", "--kubeconfig", kubeconfig)
	// The token here is bound to no node (install-cni's are): said, not failed.
	if code != 0 || strings.Contains(out, "FAIL") || strings.Count(out, "OK") != 4 || !strings.Contains(out, "WARN  node binding") {
		t.Errorf("check as the CNI identity (%d):\n%s", code, out)
	}
	out, code = kddctl(t, "check", "--kubeconfig", admin)
	if code != 0 || !strings.Contains(out, "WARN  list pods") {
		t.Errorf("check as admin (%d):\n%s", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	b, _ := os.ReadFile(kubeconfig)
	_ = os.WriteFile(bad, bytes.Replace(b, []byte("https://127.0.0.1:6443"), []byte("https://127.0.0.1:1"), 1), 0o600)
	if out, code = kddctl(t, "check", "--kubeconfig", bad); code != 1 || !strings.Contains(out, "FAIL  datastore") {
		t.Errorf("check against a dead server (%d):\n%s", code, out)
	}
	if _, code = kddctl(t, "frobnicate"); code != 2 {
		t.Errorf("unknown command exit %d", code)
	}
}
