//go:build tools

// Package tools pins containerd 2.x (its daemon, ctr and the runc shim)
// for test/tools/build.sh: the e2e runs every node check on it as well as
// on Debian's containerd 1.6.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
