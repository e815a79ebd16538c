package podcidr

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzRewrite: the rewrite never panics; a successful release rewrite is
// valid JSON with no symbol left, and ADD's rewrite only ever puts the given
// CIDRs in.
func FuzzRewrite(f *testing.F) {
	f.Add([]byte(`{"ipam":{"type":"host-local","subnet":"usePodCidr"}}`), "10.0.0.0/24", "fd00::/64")
	f.Add([]byte(`{"ipam":{"ranges":[[{"subnet":"usePodCidr","rangeStart":"10.0.0.5"}],[{"subnet":"usePodCidrIPv6"}],[{"subnet":"192.0.2.0/24"}]]}}`), "10.1.0.0/16", "")
	f.Add([]byte(`{"ipam":{"ranges":[[{"subnet":"2001:db8::/32"},{"subnet":"USEPODCIDRIPV6"}]]}}`), "", "fd00::/48")
	f.Fuzz(func(t *testing.T, conf []byte, v4, v6 string) {
		fams, err := Symbols(conf)
		if err != nil {
			return
		}
		if out, err := RewriteForRelease(conf); err == nil {
			if !json.Valid(out) {
				t.Fatalf("invalid JSON: %s", out)
			}
			if f2, err := Symbols(out); err != nil || f2.Any() {
				t.Fatalf("symbols left after release rewrite: %s", out)
			}
		}
		out, err := Rewrite(conf, CIDRs{V4: v4, V6: v6})
		if err != nil {
			return
		}
		if f2, _ := Symbols(out); f2.Any() {
			t.Fatalf("symbols left after rewrite: %s", out)
		}
		if fams.V4 && v4 != "" && !strings.Contains(string(out), mustJSON(v4)) {
			t.Fatalf("v4 CIDR missing: %s", out)
		}
		_, _ = WithIPAMType(conf, "host-local")
	})
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
