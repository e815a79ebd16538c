package integration

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `calico -t` checks datastore connectivity with the configured identity;
// `calico -v` prints the version.
func TestFlags(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	run := func(stdin []byte, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "calico"), args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cluster.Run(cmd)
		return out.String(), err
	}
	if out, err := run(nil, "-v"); err != nil || !strings.HasPrefix(out, "calico ") {
		t.Errorf("-v: %q %v", out, err)
	}
	if out, err := run(e.conf(), "-t"); err != nil || !strings.Contains(out, "datastore ok") || !strings.Contains(out, e.node) {
		t.Errorf("-t with a working datastore: %q %v", out, err)
	}
	var plugin map[string]any
	_ = json.Unmarshal(e.conf(), &plugin)
	list, _ := json.Marshal(map[string]any{"name": "k8s-pod-network", "cniVersion": "1.1.0",
		"plugins": []any{plugin, map[string]any{"type": "portmap"}}})
	if out, err := run(list, "-t"); err != nil || !strings.Contains(out, "datastore ok") {
		t.Errorf("-t with a conflist: %q %v", out, err)
	}
	e.extra["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
	if out, err := run(e.conf(), "-t"); err == nil || !strings.Contains(out, "datastore check failed") {
		t.Errorf("-t with an unreachable datastore: %q %v", out, err)
	}
}
