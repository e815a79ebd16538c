package podopts

import (
	"strings"
	"testing"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

func TestParse(t *testing.T) {
	on := netconf.FeatureControl{FloatingIPs: true}
	for _, tc := range []struct {
		name    string
		annot   map[string]string
		f       netconf.FeatureControl
		wantMAC string
		wantErr string
	}{
		{name: "none", annot: nil},
		{name: "unrelated", annot: map[string]string{"foo": "bar", "cni.projectcalico.org/ipv4pools": `["a"]`}},
		{name: "hwAddr", annot: map[string]string{HwAddr: "c2:11:22:33:44:55"}, wantMAC: "c2:11:22:33:44:55"},
		{name: "hwAddr dashes", annot: map[string]string{HwAddr: "C2-11-22-33-44-55"}, wantMAC: "c2:11:22:33:44:55"},
		{name: "hwAddr junk", annot: map[string]string{HwAddr: "nope"}, wantErr: "failed to parse MAC address"},
		{name: "hwAddr empty", annot: map[string]string{HwAddr: ""}, wantErr: "failed to parse MAC address"},
		{name: "hwAddr multicast", annot: map[string]string{HwAddr: "01:00:5e:00:00:01"}, wantErr: "unicast"},
		{name: "hwAddr zero", annot: map[string]string{HwAddr: "00:00:00:00:00:00"}, wantErr: "unicast"},
		{name: "hwAddr 64-bit", annot: map[string]string{HwAddr: "02:00:00:00:00:00:00:01"}, wantErr: "48 bits"},
		{name: "ipAddrs", annot: map[string]string{IPAddrs: `["10.0.0.1"]`}, wantErr: "ipAddrs is not compatible with configured IPAM: host-local"},
		{name: "ipAddrsNoIpam", annot: map[string]string{IPAddrsNoIpam: `["10.0.0.1"]`}, f: netconf.FeatureControl{IPAddrsNoIpam: true}, wantErr: "ipAddrsNoIpam is not compatible"},
		{name: "both", annot: map[string]string{IPAddrs: "x", IPAddrsNoIpam: "y"}, wantErr: "can't have both"},
		{name: "floating off", annot: map[string]string{FloatingIPs: `["1.2.3.4"]`}, wantErr: "not enabled: floating_ips"},
		{name: "floating on", annot: map[string]string{FloatingIPs: `["1.2.3.4","fd00::1"]`}, f: on},
		{name: "floating bad", annot: map[string]string{FloatingIPs: `["1.2.3"]`}, f: on, wantErr: "invalid entry"},
		{name: "prefixes", annot: map[string]string{AllowedSourcePrefixes: `["10.0.0.0/8"]`}},
		{name: "prefixes bad", annot: map[string]string{AllowedSourcePrefixes: `10.0.0.0/8`}, wantErr: "JSON list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.annot, "host-local", tc.f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := o.ContainerMAC.String(); got != tc.wantMAC {
				t.Fatalf("MAC = %q, want %q", got, tc.wantMAC)
			}
		})
	}
}
