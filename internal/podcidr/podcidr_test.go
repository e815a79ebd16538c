package podcidr

import (
	"encoding/json"
	"net"
	"strings"
	"testing"
)

func TestByFamily(t *testing.T) {
	c, err := ByFamily("n", []string{"10.244.1.0/24", "fd00:10:244:1::/64"})
	if err != nil || c.V4 != "10.244.1.0/24" || c.V6 != "fd00:10:244:1::/64" {
		t.Fatalf("%+v %v", c, err)
	}
	for name, in := range map[string][]string{
		"no podCIDR": nil,
		"two IPv4":   {"10.0.0.0/24", "10.0.1.0/24"},
		"two IPv6":   {"fd00::/64", "fd01::/64"},
		"invalid":    {"10.0.0.0/33"},
	} {
		if _, err := ByFamily("n", in); err == nil {
			t.Errorf("%s: accepted %v", name, in)
		}
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRewrite(t *testing.T) {
	in := `{"cniVersion":"1.0.0","name":"k8s","type":"calico","mtu":1500,"big":12345678901234567890,
	  "ipam":{"type":"host-local","dataDir":"/x","resolvConf":"/etc/r",
	    "ranges":[[{"subnet":"usepodcidr"}],[{"subnet":"usePodCidrIPv6"}],[{"subnet":"192.168.5.0/24","gateway":"192.168.5.1"}]],
	    "routes":[{"dst":"0.0.0.0/0"}]}}`
	fams, err := Symbols([]byte(in))
	if err != nil || !fams.V4 || !fams.V6 {
		t.Fatalf("Symbols = %+v, %v", fams, err)
	}
	if err := fams.Check("n", CIDRs{V4: "10.0.0.0/24"}); err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Errorf("Check: %v", err)
	}
	out, err := Rewrite([]byte(in), CIDRs{V4: "10.244.1.0/24", V6: "fd00::/64"})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{`"subnet":"10.244.1.0/24"`, `"subnet":"fd00::/64"`, `"subnet":"192.168.5.0/24"`,
		`"gateway":"192.168.5.1"`, `"dataDir":"/x"`, `"resolvConf":"/etc/r"`, `"big":12345678901234567890`, `"mtu":1500`, `"routes":[{"dst":"0.0.0.0/0"}]`} {
		if !strings.Contains(s, want) {
			t.Errorf("rewritten config lacks %s: %s", want, s)
		}
	}
	// Old-style subnet.
	out, err = Rewrite([]byte(`{"ipam":{"type":"host-local","subnet":"usePodCidr"}}`), CIDRs{V4: "10.1.0.0/16"})
	if err != nil || decode(t, out)["ipam"].(map[string]any)["subnet"] != "10.1.0.0/16" {
		t.Errorf("old-style subnet: %s %v", out, err)
	}
}

func TestRewriteErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		conf  string
		cidrs CIDRs
		want  string
	}{
		"no v4":         {`{"ipam":{"subnet":"usePodCidr"}}`, CIDRs{V6: "fd00::/64"}, "no IPv4 podCIDR"},
		"no v6":         {`{"ipam":{"ranges":[[{"subnet":"usePodCidrIPv6"}]]}}`, CIDRs{V4: "10.0.0.0/24"}, "no IPv6 podCIDR"},
		"malformed":     {`{"ipam":`, CIDRs{}, "failed to parse"},
		"no ipam":       {`{"name":"x"}`, CIDRs{}, "no ipam section"},
		"ranges object": {`{"ipam":{"ranges":{"subnet":"x"}}}`, CIDRs{}, "ipam.ranges"},
		"range scalar":  {`{"ipam":{"ranges":[[1]]}}`, CIDRs{}, "ipam.ranges[0][0]"},
	} {
		if _, err := Rewrite([]byte(tc.conf), tc.cidrs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

// The placeholders never overlap a configured range, so host-local's
// "range set overlaps" check cannot reject a DEL.
func TestRewriteForReleaseAvoidsOverlap(t *testing.T) {
	in := `{"ipam":{"type":"host-local","ranges":[
	  [{"subnet":"usePodCidr","rangeStart":"10.244.1.10","gateway":"10.244.1.1"}],
	  [{"subnet":"usePodCidrIPv6"}],
	  [{"subnet":"192.0.2.0/29"}],
	  [{"subnet":"2001:db8::/120"}]]}}`
	out, err := RewriteForRelease([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		IPAM struct {
			Ranges [][]map[string]string `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var nets []*net.IPNet
	for _, set := range cfg.IPAM.Ranges {
		_, n, err := net.ParseCIDR(set[0]["subnet"])
		if err != nil {
			t.Fatalf("unparseable subnet in %s", out)
		}
		nets = append(nets, n)
	}
	for i := range nets {
		for j := range nets {
			if i != j && (nets[i].Contains(nets[j].IP) || nets[j].Contains(nets[i].IP)) {
				t.Errorf("range %s overlaps %s in %s", nets[i], nets[j], out)
			}
		}
	}
	if _, ok := cfg.IPAM.Ranges[0][0]["rangeStart"]; ok {
		t.Errorf("rangeStart of the podCIDR range kept: %s", out)
	}
	if nets[0].String() != "192.0.2.8/30" || nets[1].String() != "2001:db8:1::/126" {
		t.Errorf("placeholders %s %s", nets[0], nets[1])
	}
}

func TestUsable(t *testing.T) {
	for cidr, want := range map[string]uint64{
		"10.0.0.0/24": 253, "10.0.0.0/30": 1, "10.0.0.0/31": 0, "10.0.0.0/32": 0,
		"fd00::/120": 254, "fd00::/64": 1 << 62, "fd00::/127": 0,
	} {
		if got, err := Usable(cidr); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", cidr, got, err, want)
		}
	}
	if _, err := Usable("bogus"); err == nil {
		t.Error("bogus CIDR accepted")
	}
}

// The byte-level forms the fuzzer and the table tests drive.

func Symbols(netconf []byte) (Families, error) {
	c, err := Parse(netconf)
	if err != nil {
		return Families{}, err
	}
	return c.Families(), nil
}

func Rewrite(netconf []byte, cidrs CIDRs) ([]byte, error) {
	c, err := Parse(netconf)
	if err != nil {
		return nil, err
	}
	return c.Rewrite(cidrs)
}

func RewriteForRelease(netconf []byte) ([]byte, error) {
	c, err := Parse(netconf)
	if err != nil {
		return nil, err
	}
	return c.ForRelease()
}

func WithIPAMType(netconf []byte, typ string) ([]byte, error) {
	c, err := Parse(netconf)
	if err != nil {
		return nil, err
	}
	return c.WithIPAMType(typ).Unchanged()
}
