// Package buildinfo holds the version stamped into every kdd-cni binary by the
// linker (-ldflags "-X .../buildinfo.Version=...").
package buildinfo

import (
	"fmt"
	"runtime"
)

// Version is set at link time; "dev" marks an unstamped build.
var Version = "dev"

// String describes the binary named program, e.g. "calico v0.1.0 (go1.26.8)".
func String(program string) string {
	return fmt.Sprintf("%s %s (%s)", program, Version, runtime.Version())
}
