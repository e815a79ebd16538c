// Command calico is kdd-cni's CNI plugin: a drop-in for Calico's `calico`
// binary in a Kubernetes-datastore install with host-local IPAM.
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plugin"
	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
)

// Namespace switches apply to one OS thread: keep main on its thread. The
// process lives for milliseconds: the GC stays off unless the heap nears
// the memory limit.
func init() {
	runtime.LockOSThread()
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(64 << 20)
}

func main() {
	p := plugin.New()
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "-v", "--version":
			fmt.Println(buildinfo.String("calico"))
			return
		case "-t":
			os.Exit(p.TestDatastore(os.Stdin, os.Stdout, os.Stderr))
		}
	}
	skel.PluginMainFuncs(p.Funcs(), plugin.Versions, buildinfo.String("calico"))
}
