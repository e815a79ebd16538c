package wep

import (
	"net"
	"testing"
)

func TestAddPatch(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.244.1.5/32")
	_, v6, _ := net.ParseCIDR("fd00::5/128")
	b, err := NewEndpoint([]net.IPNet{*v4, *v6}, "abc").AddPatch()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"metadata":{"annotations":{"cni.projectcalico.org/containerID":"abc","cni.projectcalico.org/podIP":"10.244.1.5/32","cni.projectcalico.org/podIPs":"10.244.1.5/32,fd00::5/128"}}}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestReleasePatch(t *testing.T) {
	b, _ := Endpoint{ContainerID: "abc"}.ReleasePatch()
	want := `[{"op":"test","path":"/metadata/annotations/cni.projectcalico.org~1containerID","value":"abc"},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIP","value":""},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIPs","value":""}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestUnownedReleasePatch(t *testing.T) {
	b, _ := UnownedReleasePatch("u-1", "42")
	want := `[{"op":"test","path":"/metadata/uid","value":"u-1"},` +
		`{"op":"test","path":"/metadata/resourceVersion","value":"42"},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIP","value":""},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIPs","value":""}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestReassertPatch(t *testing.T) {
	_, v4, _ := net.ParseCIDR("10.244.1.5/32")
	b, _ := NewEndpoint([]net.IPNet{*v4}, "new").ReassertPatch("old")
	want := `[{"op":"test","path":"/metadata/annotations/cni.projectcalico.org~1containerID","value":"old"},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIP","value":"10.244.1.5/32"},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1podIPs","value":"10.244.1.5/32"},` +
		`{"op":"add","path":"/metadata/annotations/cni.projectcalico.org~1containerID","value":"new"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
