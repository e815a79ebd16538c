package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// NetConf is the `calico` plugin configuration the suites run: the keys the
// shipped conflist sets, pointed at the test's node, identity and paths.
type NetConf struct {
	Version    string // cniVersion
	Name       string // network name
	Node       string
	Kubeconfig string
	StateDir   string
	LogFile    string
	IPAM       map[string]any
	Extra      map[string]any // set last: may override any key
}

// Map is the configuration as a JSON object.
func (n NetConf) Map() map[string]any {
	c := map[string]any{
		"cniVersion": n.Version, "name": n.Name, "type": "calico",
		"log_level": "debug", "log_file_path": n.LogFile,
		"datastore_type": "kubernetes", "nodename": n.Node, "mtu": 1500, "state_dir": n.StateDir,
		"kubernetes": map[string]any{"kubeconfig": n.Kubeconfig},
		"ipam":       n.IPAM, "policy": map[string]any{"type": "k8s"},
	}
	for k, v := range n.Extra {
		c[k] = v
	}
	return c
}

// JSON is the configuration as the runtime passes it on stdin.
func (n NetConf) JSON() []byte {
	b, err := json.Marshal(n.Map())
	if err != nil {
		panic(fmt.Sprintf("marshal netconf: %v", err)) // only JSON values are ever put in
	}
	return b
}

// mtuPlaceholder is the one placeholder of the shipped conflist template
// that is not inside a JSON string.
const mtuPlaceholder = "__CNI_MTU__"

// TemplateWith is the shipped conflist template (still with install-cni's
// placeholders) with keys set on the calico plugin and in its ipam section:
// what a user does when they add keys to CNI_NETWORK_CONFIG.
func TemplateWith(tmpl []byte, calico, ipam map[string]any) (string, error) {
	quoted := strings.Replace(string(tmpl), mtuPlaceholder, `"`+mtuPlaceholder+`"`, 1)
	var list map[string]any
	if err := json.Unmarshal([]byte(quoted), &list); err != nil {
		return "", fmt.Errorf("parse the conflist template: %w", err)
	}
	plugins, _ := list["plugins"].([]any)
	var first map[string]any
	if len(plugins) > 0 {
		first, _ = plugins[0].(map[string]any)
	}
	if first == nil || first["type"] != "calico" {
		return "", fmt.Errorf("the conflist template does not start with the calico plugin")
	}
	for k, v := range calico {
		first[k] = v
	}
	ipamSection, ok := first["ipam"].(map[string]any)
	if !ok {
		return "", fmt.Errorf("the conflist template's calico plugin has no ipam section")
	}
	for k, v := range ipam {
		ipamSection[k] = v
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return "", err
	}
	return strings.Replace(string(b), `"`+mtuPlaceholder+`"`, mtuPlaceholder, 1), nil
}

// ConflistMTU is the calico plugin's `mtu` in the conflist at path (-1:
// no such file, or no calico plugin in it).
func ConflistMTU(path string) int {
	var list struct {
		Plugins []struct {
			Type string `json:"type"`
			MTU  int    `json:"mtu"`
		} `json:"plugins"`
	}
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &list) != nil {
		return -1
	}
	for _, p := range list.Plugins {
		if p.Type == "calico" {
			return p.MTU
		}
	}
	return -1
}
