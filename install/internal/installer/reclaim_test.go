package installer

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
	"github.com/kdd-cni/kdd-cni/install/internal/cri"
)

func TestGCConf(t *testing.T) {
	plugin := []byte(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"calico","ipam":{"type":"host-local","subnet":"usePodCidr"}}`)
	b, err := gcConf(plugin, []cri.Sandbox{{ID: "a"}, {ID: "b", Ready: true}}, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		CNIVersion string `json:"cniVersion"`
		Valid      []struct {
			ContainerID string `json:"containerID"`
			IfName      string `json:"ifname"`
		} `json:"cni.dev/valid-attachments"`
		Sandboxes []string       `json:"kdd-cni.dev/valid-sandboxes"`
		Grace     int            `json:"kdd-cni.dev/gc-grace-seconds"`
		IPAM      map[string]any `json:"ipam"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.CNIVersion != "1.1.0" || len(c.Valid) != 2 || c.Valid[1].ContainerID != "b" || c.Valid[1].IfName != "eth0" ||
		len(c.Sandboxes) != 2 || c.Grace != 120 || c.IPAM["subnet"] != "usePodCidr" {
		t.Errorf("%s", b)
	}
	// No sandbox at all is a list, not an absent one: everything not young goes.
	b, _ = gcConf(plugin, nil, time.Minute)
	var empty map[string]any
	_ = json.Unmarshal(b, &empty)
	if v, ok := empty["cni.dev/valid-attachments"].([]any); !ok || len(v) != 0 {
		t.Errorf("empty list: %s", b)
	}
}

func TestPools(t *testing.T) {
	plugin := []byte(`{"name":"n","ipam":{"type":"host-local","ranges":[[{"subnet":"usePodCidr"}],[{"subnet":"usePodCidrIPv6"}]]}}`)
	ps := pools(NodeInfo{PodCIDRs: []string{"10.1.2.0/26", "fd00::/120"}}, plugin)
	if len(ps) != 2 || ps[0].name != "IPv4" || ps[0].usable != 61 || ps[1].name != "IPv6" || ps[1].usable != 254 {
		t.Errorf("%+v", ps)
	}
	if ps := pools(NodeInfo{PodCIDRs: []string{"10.1.2.0/26"}}, []byte(`{"name":"n","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}`)); len(ps) != 0 {
		t.Errorf("a static subnet is not the podCIDR: %+v", ps)
	}
}

func TestReclaimRefusesARuntimeThatDoesNotKnowItsPod(t *testing.T) {
	in := &Installer{Cfg: &config.Config{PodName: "kdd-cni-node-x", Namespace: "kube-system", RuntimeEndpoint: "unix:///run/x.sock"}}
	if err := in.knowsOwnPod([]cri.Sandbox{{ID: "1", Name: "web", Namespace: "default"}}); err == nil {
		t.Error("a runtime without this pod was trusted")
	}
	if err := in.knowsOwnPod([]cri.Sandbox{{ID: "1", Name: "kdd-cni-node-x", Namespace: "kube-system"}}); err != nil {
		t.Error(err)
	}
	in.Cfg.PodName = ""
	if err := in.knowsOwnPod(nil); err != nil {
		t.Error(err)
	}
}

// The released count is what went, not the difference of two counts: an
// ADD between the two reads must not hide a release.
func TestGoneCountsReleasesDespiteADDs(t *testing.T) {
	a := func(id string) types.GCAttachment { return types.GCAttachment{ContainerID: id, IfName: "eth0"} }
	before := []types.GCAttachment{a("kept"), a("leaked")}
	after := []types.GCAttachment{a("kept"), a("new")}
	if n := gone(before, after); n != 1 {
		t.Errorf("gone = %d, want 1", n)
	}
}
