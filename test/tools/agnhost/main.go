// Command agnhost is Kubernetes' e2e test image program with only the two
// subcommands the NetworkPolicy specs run: porter (the servers) and connect
// (the probes), built from the pinned k8s.io/kubernetes module and packed
// as registry.k8s.io/e2e-test-images/agnhost:2.66.1 by test/netpol.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"k8s.io/kubernetes/test/images/agnhost/connect"
	"k8s.io/kubernetes/test/images/agnhost/porter"
)

func main() {
	root := &cobra.Command{Use: "app", Version: "2.66.1"}
	root.AddCommand(connect.CmdConnect, porter.CmdPorter)
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
