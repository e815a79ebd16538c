//go:build tools

// Package tools pins flanneld (github.com/flannel-io/flannel, its main
// package at the module root) for test/tools/build.sh.
package tools

import _ "github.com/flannel-io/flannel"
