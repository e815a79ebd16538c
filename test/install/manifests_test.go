package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

var parts = []string{"rbac-cni.yaml", "rbac-install.yaml", "admission-node-scope.yaml", "configmap.yaml", "daemonset.yaml", "calico-node.yaml", "typha.yaml"}

func conf(p string) string { return filepath.Join(harness.RepoRoot(), "conf", p) }

// Every manifest passes a server-side dry-run apply on the real apiserver,
// after Calico's CRDs (conf/calico-crds.yaml, applied for real: Felix's
// objects need them).
func TestManifestsDryRun(t *testing.T) {
	harness.RequireRoot(t)
	if err := suite.CP.ApplyCRDs(context.Background(), conf("calico-crds.yaml")); err != nil {
		t.Fatalf("apply calico-crds.yaml: %v", err)
	}
	files := []string{conf("kdd-cni.yaml"), conf("addons/kdd-cni-configmap.yaml"), conf("addons/kdd-cni-daemonset.yaml")}
	for _, p := range parts {
		files = append(files, harness.Manifest(p))
	}
	for _, f := range files {
		if err := suite.CP.ApplyManifest(context.Background(), f, true); err != nil {
			t.Errorf("dry-run apply %s: %v", f, err)
		}
	}
}

func objects(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []map[string]any
	for {
		var o map[string]any
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
}

// The bundle is the parts; the addon files are the parts plus the addon
// manager label; the ConfigMap carries the shipped template verbatim.
func TestManifestsConsistent(t *testing.T) {
	var want []map[string]any
	for _, p := range parts {
		want = append(want, objects(t, harness.Manifest(p))...)
	}
	if got := objects(t, conf("kdd-cni.yaml")); !reflect.DeepEqual(got, want) {
		t.Error("conf/kdd-cni.yaml is stale: run `make manifests`")
	}
	addons := append(objects(t, conf("addons/kdd-cni-configmap.yaml")), objects(t, conf("addons/kdd-cni-daemonset.yaml"))...)
	for _, o := range addons {
		u := unstructured.Unstructured{Object: o}
		labels := u.GetLabels()
		if labels["addonmanager.kubernetes.io/mode"] == "" {
			t.Errorf("addon %s/%s lacks the addon manager label", u.GetKind(), u.GetName())
		}
		delete(labels, "addonmanager.kubernetes.io/mode")
		if len(labels) == 0 {
			unstructured.RemoveNestedField(o, "metadata", "labels")
		} else {
			u.SetLabels(labels)
		}
	}
	if len(addons) != len(want) {
		t.Fatalf("addons hold %d objects, parts %d", len(addons), len(want))
	}
	for _, w := range want {
		found := false
		for _, a := range addons {
			found = found || reflect.DeepEqual(a, w)
		}
		if !found {
			t.Errorf("addon files differ from %v/%v", w["kind"], w["metadata"].(map[string]any)["name"])
		}
	}
	tmpl, _ := os.ReadFile(conf("10-calico.conflist.template"))
	for _, o := range want {
		if o["kind"] == "ConfigMap" {
			if got := o["data"].(map[string]any)["cni_network_config"]; got != strings.TrimRight(string(tmpl), "\n") {
				t.Errorf("ConfigMap cni_network_config differs from conf/10-calico.conflist.template")
			}
		}
	}
}

// install-cni runs from the image tree (chroot, as in the container: static
// binary, no shell), with only the defaults: /host, the bundled template.
func TestImageRootfs(t *testing.T) {
	harness.RequireRoot(t)
	img := t.TempDir()
	if out, err := exec.Command("cp", "-a", rootfs+"/.", img).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v %s", err, out)
	}
	kc, _ := os.ReadFile(installerKubeconfig)
	for _, d := range []string{"host", "var/run/secrets/kubernetes.io/serviceaccount"} {
		if err := os.MkdirAll(filepath.Join(img, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(img, "etc/kdd-cni/kubeconfig"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(img, "var/run/secrets/kubernetes.io/serviceaccount/namespace"), []byte("kube-system"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/opt/cni/bin/install-cni")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: img}
	cmd.Dir = "/"
	cmd.Env = []string{"KUBECONFIG=/etc/kdd-cni/kubeconfig", "KUBERNETES_NODE_NAME=" + node, "SLEEP=false"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := suite.CP.Run(cmd); err != nil {
		t.Fatalf("install-cni in the image tree: %v\n%s", err, out.String())
	}
	for _, f := range []string{"host/opt/cni/bin/calico", "host/opt/cni/bin/host-local", "host/opt/cni/bin/portmap",
		"host/opt/cni/bin/loopback", "host/opt/cni/bin/podcidr", "host/etc/cni/net.d/10-calico.conflist", "host/etc/cni/net.d/calico-kubeconfig"} {
		if _, err := os.Stat(filepath.Join(img, f)); err != nil {
			t.Errorf("%s missing: %v", f, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(img, "host/etc/cni/net.d/10-calico.conflist"))
	if !bytes.Contains(b, []byte(`"/etc/cni/net.d/calico-kubeconfig"`)) || !bytes.Contains(b, []byte(`"nodename": "`+node+`"`)) {
		t.Errorf("conflist from the image defaults:\n%s", b)
	}
}
