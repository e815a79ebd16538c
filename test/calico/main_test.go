// Package calico proves kdd-cni with Calico's own parts, built from the
// pinned Calico release: Felix (KDD policy-only mode) enforcing Kubernetes
// NetworkPolicy on pods kdd-cni networked, and Calico's own `calico` binary
// sharing a node with ours (binary swap in both directions, identical Felix
// rules). Each test gets its own control plane and node namespace, since
// Felix owns the node's netfilter tables.
package calico

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) { os.Exit(m.Run()) }
