package plan

import (
	"testing"

	"github.com/containernetworking/cni/pkg/version"
)

// FuzzPrevResult: whatever prevResult CHECK receives, parsing it and
// planning from it never panics, and a plan holds only /32 and /128.
func FuzzPrevResult(f *testing.F) {
	f.Add("1.0.0", []byte(`{"cniVersion":"1.0.0","interfaces":[{"name":"cali1"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.0.0.2/32","interface":1},{"address":"fd00::2/128","interface":1}]}`))
	f.Add("0.3.1", []byte(`{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.0.0.2/24","gateway":"10.0.0.1"}]}`))
	f.Add("1.1.0", []byte(`{"cniVersion":"1.1.0","ips":[{"address":"nonsense"}]}`))
	f.Fuzz(func(t *testing.T, ver string, raw []byte) {
		res, err := version.NewResult(ver, raw)
		if err != nil {
			return
		}
		ips, err := IPsFromResult(res)
		if err != nil {
			return
		}
		p, err := Build(Input{HostVeth: "cali1", IfName: "eth0", IPs: ips, Routes: []string{"10.96.0.0/12"}})
		if err != nil {
			return
		}
		for _, a := range p.Addresses {
			if ones, bits := a.Mask.Size(); ones != bits {
				t.Fatalf("address %s is not a host route", a.String())
			}
		}
	})
}
