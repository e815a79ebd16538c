package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// `calico -t` checks datastore connectivity with the configured identity,
// and the node's podCIDRs when the IPAM configuration names them, with the
// output contract of Calico's: silent stdout and exit 0 when it passes, a
// code-100 CNI error on stdout and exit 1 when it fails. `calico -v` prints
// the version.
func TestFlags(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	run := func(stdin []byte, args ...string) (stdout, stderr string, err error) {
		cmd := exec.Command(filepath.Join(binDir, "calico"), args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var out, diag bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &diag
		err = cluster.Run(cmd)
		return out.String(), diag.String(), err
	}
	if out, _, err := run(nil, "-v"); err != nil || !strings.HasPrefix(out, "calico ") {
		t.Errorf("-v: %q %v", out, err)
	}
	passes := func(what string, conf []byte, diagWants ...string) {
		t.Helper()
		out, diag, err := run(conf, "-t")
		if err != nil || out != "" {
			t.Errorf("-t %s: exit %v, stdout %q (want 0 and nothing), stderr %q", what, err, out, diag)
		}
		for _, w := range diagWants {
			if !strings.Contains(diag, w) {
				t.Errorf("-t %s: stderr %q, want %q", what, diag, w)
			}
		}
	}
	fails := func(what string, conf []byte, cause string) {
		t.Helper()
		out, diag, err := run(conf, "-t")
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("-t %s: %v, want exit 1", what, err)
		}
		var ce types.Error
		if jerr := json.Unmarshal([]byte(out), &ce); jerr != nil || ce.Code != 100 || ce.Msg != "data store connection failed" || !strings.Contains(ce.Details, cause) {
			t.Errorf("-t %s: stdout %q (%v), want a code-100 CNI error whose details name %q; stderr %q", what, out, jerr, cause, diag)
		}
	}
	passes("with a working datastore", e.conf(), "datastore ok", e.node)
	var plugin map[string]any
	_ = json.Unmarshal(e.conf(), &plugin)
	list, _ := json.Marshal(map[string]any{"name": "k8s-pod-network", "cniVersion": "1.1.0",
		"plugins": []any{plugin, map[string]any{"type": "portmap"}}})
	passes("with a conflist", list, "datastore ok")

	node := e.node
	e.node = "no-such-node"
	fails("for a node that does not exist, with usePodCidr", e.conf(), `node "no-such-node"`)
	e.ipam = map[string]any{"type": "host-local", "subnet": "10.199.0.0/24"}
	passes("with a static subnet: no node is read", e.conf(), "datastore ok")
	e.node = node

	e.extra["kubernetes"] = map[string]any{"kubeconfig": kubeconfig, "k8s_api_root": "https://127.0.0.1:1"}
	fails("with an unreachable datastore", e.conf(), "127.0.0.1:1")
}
