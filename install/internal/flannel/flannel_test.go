package flannel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// subnet.env as flanneld v0.28 writes it for a VXLAN backend.
const vxlanEnv = `FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
`

func TestParseMTU(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     int
		err      string
	}{
		{"vxlan", vxlanEnv, 1450, ""},
		{"host-gw", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1500\n", 1500, ""},
		{"spaces and CRLF", " FLANNEL_MTU = 1400 \r\n", 1400, ""},
		{"missing", "FLANNEL_NETWORK=10.244.0.0/16\n", 0, "no FLANNEL_MTU"},
		{"empty", "", 0, "no FLANNEL_MTU"},
		{"not a number", "FLANNEL_MTU=big\n", 0, `invalid FLANNEL_MTU="big"`},
		{"too small", "FLANNEL_MTU=60\n", 0, `invalid FLANNEL_MTU="60"`},
		{"too big", "FLANNEL_MTU=70000\n", 0, `invalid FLANNEL_MTU="70000"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMTU([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseMTU(%q) = %d, %v; want error %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseMTU(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestMTU(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if mtu, found, err := MTU(path); mtu != 0 || found || err != nil {
		t.Fatalf("no file: %d %v %v", mtu, found, err)
	}
	if err := os.WriteFile(path, []byte(vxlanEnv), 0o644); err != nil {
		t.Fatal(err)
	}
	if mtu, found, err := MTU(path); mtu != 1450 || !found || err != nil {
		t.Fatalf("vxlan: %d %v %v", mtu, found, err)
	}
	if err := os.WriteFile(path, []byte("FLANNEL_MTU=x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, found, err := MTU(path); !found || err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("bad file: %v %v", found, err)
	}
}
