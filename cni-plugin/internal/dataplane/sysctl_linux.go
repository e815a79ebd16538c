package dataplane

import (
	"fmt"
	"os"
	"strings"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

const procSys = "/proc/sys/"

// writeSysctls applies settings in the current network namespace. Optional
// ones may fail (e.g. IPv6 disabled on the host).
func writeSysctls(settings []plan.Sysctl) error {
	for _, s := range settings {
		if err := os.WriteFile(procSys+s.Key, []byte(s.Value), 0o644); err != nil && !s.Optional {
			return fmt.Errorf("failed to set sysctl %s=%s: %w", strings.ReplaceAll(s.Key, "/", "."), s.Value, err)
		}
	}
	return nil
}

// checkSysctls reports the first setting whose value differs.
func checkSysctls(settings []plan.Sysctl) error {
	for _, s := range settings {
		b, err := os.ReadFile(procSys + s.Key)
		if err != nil {
			if s.Optional {
				continue
			}
			return fmt.Errorf("failed to read sysctl %s: %w", strings.ReplaceAll(s.Key, "/", "."), err)
		}
		if got := strings.TrimSpace(string(b)); got != s.Value {
			return fmt.Errorf("sysctl %s is %s, want %s", strings.ReplaceAll(s.Key, "/", "."), got, s.Value)
		}
	}
	return nil
}

// ensureLinkLocal makes the kernel give the host veth an IPv6 link-local
// address, the pod's IPv6 next hop: a node whose addr_gen_mode is 1 (none)
// would give it none, so that mode becomes 0 (EUI-64) on this veth alone.
// The other modes (EUI-64, stable privacy, random) are kept.
func ensureLinkLocal(veth string) error {
	mode := plan.Sysctl{Key: "net/ipv6/conf/" + veth + "/addr_gen_mode", Value: "1"}
	b, err := os.ReadFile(procSys + mode.Key)
	if err != nil {
		return fmt.Errorf("failed to read sysctl %s: %w", strings.ReplaceAll(mode.Key, "/", "."), err)
	}
	if strings.TrimSpace(string(b)) != mode.Value {
		return nil
	}
	mode.Value = "0"
	return writeSysctls([]plan.Sysctl{mode})
}
