package view

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func pod(ns, name, node string, hostNet bool, ann map[string]string, statusIPs ...string) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: ann, Labels: map[string]string{"app": name}}}
	p.Spec.NodeName, p.Spec.HostNetwork, p.Spec.ServiceAccountName = node, hostNet, "default"
	for _, ip := range statusIPs {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func TestFromPodsAndTable(t *testing.T) {
	pods := []corev1.Pod{
		pod("default", "nginx-abc", "node-1", false, map[string]string{"cni.projectcalico.org/podIPs": "10.0.0.5/32,fd00::5/128", "cni.projectcalico.org/containerID": "c1"}),
		pod("default", "hostnet", "node-1", true, nil),
		pod("default", "unscheduled", "", false, nil),
		pod("kube-system", "dns", "node-1", false, nil, "10.0.0.9"),
	}
	weps := FromPods(pods, "cali")
	if len(weps) != 2 {
		t.Fatalf("%d endpoints: %+v", len(weps), weps)
	}
	w := weps[0]
	if w.Metadata.Name != "node--1-k8s-nginx--abc-eth0" || w.Spec.InterfaceName != "calic611c731f42" ||
		strings.Join(w.Spec.IPNetworks, ",") != "10.0.0.5/32,fd00::5/128" || w.Spec.ContainerID != "c1" ||
		strings.Join(w.Spec.Profiles, ",") != "kns.default,ksa.default.default" || w.Metadata.Labels["projectcalico.org/orchestrator"] != "k8s" {
		t.Errorf("%+v", w)
	}
	if got := weps[1].Spec.IPNetworks; len(got) != 1 || got[0] != "10.0.0.9/32" {
		t.Errorf("status.podIPs not preferred: %v", got)
	}
	var b bytes.Buffer
	if err := Write(&b, weps[:1], "", false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if strings.Join(strings.Fields(lines[0]), " ") != "HOSTNAME ORCHESTRATOR WORKLOAD NAME" ||
		strings.Join(strings.Fields(lines[1]), " ") != "node-1 k8s default.nginx-abc eth0" {
		t.Errorf("table:\n%s", b.String())
	}
	b.Reset()
	_ = Write(&b, weps, "wide", true)
	if !strings.Contains(b.String(), "NAMESPACE") || !strings.Contains(b.String(), "node--1-k8s-nginx--abc-eth0") || !strings.Contains(b.String(), "10.0.0.5/32,fd00::5/128") {
		t.Errorf("wide:\n%s", b.String())
	}
	for _, f := range []string{"json", "yaml"} {
		b.Reset()
		if err := Write(&b, weps, f, false); err != nil {
			t.Fatal(err)
		}
		js := b.Bytes()
		if f == "yaml" {
			var err error
			if js, err = yaml.YAMLToJSON(js); err != nil {
				t.Fatal(err)
			}
		}
		var list struct {
			Kind  string             `json:"kind"`
			Items []WorkloadEndpoint `json:"items"`
		}
		if err := json.Unmarshal(js, &list); err != nil || list.Kind != "WorkloadEndpointList" || len(list.Items) != 2 {
			t.Errorf("%s: %v %s", f, err, b.String())
		}
	}
	if err := Write(&b, weps, "xml", false); err == nil {
		t.Error("unknown format accepted")
	}
}
