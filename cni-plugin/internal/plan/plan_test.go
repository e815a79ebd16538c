package plan

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func ipc(cidr, gw string) *types100.IPConfig {
	ip, n, _ := net.ParseCIDR(cidr)
	n.IP = ip
	return &types100.IPConfig{Address: *n, Gateway: net.ParseIP(gw)}
}

func routeStrings(p Plan) []string {
	var s []string
	for _, r := range p.Routes {
		if r.LinkScope {
			s = append(s, r.Dst.String()+" scope link")
			continue
		}
		if r.ViaHostLinkLocal {
			s = append(s, r.Dst.String()+" via host-ll")
			continue
		}
		s = append(s, r.Dst.String()+" via "+r.GW.String())
	}
	return s
}

func TestBuildDualStackDefaults(t *testing.T) {
	p, err := Build(Input{HostVeth: "cali1", IfName: "eth0", IPs: []*types100.IPConfig{
		ipc("10.244.1.5/24", "10.244.1.1"), ipc("fd00::5/64", "fd00::1")}})
	if err != nil {
		t.Fatal(err)
	}
	if p.NumQueues != 1 || !p.HasIPv4 || !p.HasIPv6 {
		t.Errorf("%+v", p)
	}
	if got := p.Addresses[0].String() + " " + p.Addresses[1].String(); got != "10.244.1.5/32 fd00::5/128" {
		t.Errorf("addresses %s", got)
	}
	if got := strings.Join(routeStrings(p), ","); got != "169.254.1.1/32 scope link,0.0.0.0/0 via 169.254.1.1,::/0 via host-ll" {
		t.Errorf("routes %s", got)
	}
	if got := p.HostRoutes[0].String() + " " + p.HostRoutes[1].String(); got != "10.244.1.5/32 fd00::5/128" {
		t.Errorf("host routes %s", got)
	}
	keys := map[string]string{}
	for _, s := range p.HostSysctls {
		keys[s.Key] = s.Value
	}
	for k, v := range map[string]string{
		"net/ipv4/conf/cali1/proxy_arp": "1", "net/ipv4/neigh/cali1/proxy_delay": "0",
		"net/ipv4/conf/cali1/forwarding": "1", "net/ipv4/conf/cali1/route_localnet": "1",
		"net/ipv6/conf/cali1/accept_ra": "0", "net/ipv6/conf/cali1/proxy_ndp": "1", "net/ipv6/conf/cali1/accept_dad": "0",
	} {
		if keys[k] != v {
			t.Errorf("host sysctl %s = %q, want %q", k, keys[k], v)
		}
	}
	ckeys := map[string]string{}
	for _, s := range p.ContainerSysctls {
		ckeys[s.Key] = s.Value
	}
	if ckeys["net/ipv4/ip_forward"] != "0" || ckeys["net/ipv6/conf/all/forwarding"] != "0" || ckeys["net/ipv6/conf/eth0/accept_dad"] != "0" {
		t.Errorf("container sysctls %v", ckeys)
	}
}

func TestBuildRoutes(t *testing.T) {
	v4 := []*types100.IPConfig{ipc("10.0.0.2/24", "")}
	for name, tc := range map[string]struct {
		in   Input
		want string
	}{
		"v4 only drops v6 default": {Input{IPs: v4}, "169.254.1.1/32 scope link,0.0.0.0/0 via 169.254.1.1"},
		"custom routes":            {Input{IPs: v4, Routes: []string{"10.96.0.0/12", "fd00::/8"}}, "169.254.1.1/32 scope link,10.96.0.0/12 via 169.254.1.1"},
		"custom + defaults":        {Input{IPs: v4, Routes: []string{"10.96.0.0/12"}, IncludeDefaultRoutes: true}, "169.254.1.1/32 scope link,10.96.0.0/12 via 169.254.1.1,0.0.0.0/0 via 169.254.1.1"},
		"duplicate default":        {Input{IPs: v4, Routes: []string{"0.0.0.0/0"}, IncludeDefaultRoutes: true}, "169.254.1.1/32 scope link,0.0.0.0/0 via 169.254.1.1"},
		"v6 only":                  {Input{IPs: []*types100.IPConfig{ipc("fd00::2/64", "")}}, "::/0 via host-ll"},
	} {
		p, err := Build(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(routeStrings(p), ","); got != tc.want {
			t.Errorf("%s: routes %s, want %s", name, got, tc.want)
		}
	}
	if _, err := Build(Input{IPs: v4, Routes: []string{"nonsense"}}); err == nil {
		t.Error("bad route accepted")
	}
	if _, err := Build(Input{}); err == nil {
		t.Error("no IPs accepted")
	}
	p, _ := Build(Input{IPs: v4, AllowIPForwarding: true, HostVeth: "c", IfName: "eth0"})
	if p.ContainerSysctls[len(p.ContainerSysctls)-1] != (Sysctl{Key: "net/ipv4/ip_forward", Value: "1"}) {
		t.Errorf("allow_ip_forwarding: %v", p.ContainerSysctls)
	}
}

func TestResultPerVersion(t *testing.T) {
	ipamRes := &types100.Result{CNIVersion: "1.0.0", IPs: []*types100.IPConfig{ipc("10.0.0.2/24", "10.0.0.1"), ipc("fd00::2/64", "fd00::1")},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}}}
	p, _ := Build(Input{HostVeth: "calia", IfName: "eth0", IPs: ipamRes.IPs, MTU: 1400})
	r := Result(p, ipamRes, "0a:58:00:00:00:01", "/run/netns/x")
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		conv, err := r.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		b, _ := json.Marshal(conv)
		s := string(b)
		for _, want := range []string{`"cniVersion":"` + v + `"`, `"address":"10.0.0.2/32"`, `"address":"fd00::2/128"`,
			`{"name":"calia"}`, `"mac":"0a:58:00:00:00:01"`, `"sandbox":"/run/netns/x"`, `"interface":1`} {
			if !strings.Contains(s, want) {
				t.Errorf("%s result lacks %s: %s", v, want, s)
			}
		}
		if strings.Contains(s, "gateway") {
			t.Errorf("%s result has a gateway: %s", v, s)
		}
		if hasMTU := strings.Contains(s, `"mtu":1400`); hasMTU != !strings.HasPrefix(v, "0.") {
			t.Errorf("%s result's mtu present %v: %s", v, hasMTU, s)
		}
	}
}
