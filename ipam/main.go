// Command podcidr is kdd-cni's standalone IPAM plugin: host-local over the
// node's podCIDRs read from the Kubernetes API ("subnet": "usePodCidr").
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/ipam/internal/shim"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println(buildinfo.String("podcidr"))
		return
	}
	skel.PluginMainFuncs(shim.New().Funcs(), shim.Versions, buildinfo.String("podcidr"))
}
