// Command coredns is the cluster DNS the e2e cluster runs: CoreDNS from its
// pinned module with only the plugins a Kubernetes cluster's DNS uses (the
// Corefile kubeadm deploys), not the cloud back ends of the full build.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// The plugins above register themselves; coremain runs them in CoreDNS's
// own directive order.
func main() { coremain.Run() }
