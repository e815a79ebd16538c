// Package naming derives the names Calico's Felix expects: the host-side veth
// of a pod and the WorkloadEndpoint name. Felix computes the same names from
// the Pod, so these must match Calico byte for byte.
package naming

import (
	"crypto/sha1" //nolint:gosec // a name, not a security boundary; Felix uses SHA-1 too
	"encoding/hex"
	"strings"
)

// DefaultInterfacePrefix is the host veth prefix when FELIX_INTERFACEPREFIX is unset.
const DefaultInterfacePrefix = "cali"

// InterfacePrefix returns the first entry of FELIX_INTERFACEPREFIX (a
// comma-separated list), or "cali".
func InterfacePrefix(felixInterfacePrefix string) string {
	first, _, _ := strings.Cut(felixInterfacePrefix, ",")
	if first = strings.TrimSpace(first); first != "" {
		return first
	}
	return DefaultInterfacePrefix
}

// HostVeth is prefix + the first 11 hex digits of SHA-1("<namespace>.<pod>"),
// e.g. "calic611c731f42", at most 15 bytes (IFNAMSIZ-1) for the default prefix.
func HostVeth(prefix, namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod)) //nolint:gosec
	return prefix + hex.EncodeToString(sum[:])[:11]
}

// WorkloadEndpoint builds Calico's Kubernetes WorkloadEndpoint name
// "<node>-k8s-<pod>-<endpoint>", each segment with "-" doubled to "--".
func WorkloadEndpoint(node, pod, endpoint string) string {
	esc := func(s string) string { return strings.ReplaceAll(s, "-", "--") }
	return esc(node) + "-k8s-" + esc(pod) + "-" + esc(endpoint)
}

// aliasPrefix marks host veths created by kdd-cni. GC removes only those.
const aliasPrefix = "kdd-cni/"

// HostVethAlias is the interface alias set on a host veth: it records the
// attachment (container ID and interface) that owns it.
func HostVethAlias(containerID, ifName string) string {
	return aliasPrefix + containerID + "/" + ifName
}

// ParseHostVethAlias reverses HostVethAlias; ok is false for links kdd-cni
// did not create.
func ParseHostVethAlias(alias string) (containerID, ifName string, ok bool) {
	rest, found := strings.CutPrefix(alias, aliasPrefix)
	i := strings.LastIndexByte(rest, '/')
	if !found || i <= 0 || i == len(rest)-1 {
		return "", "", false
	}
	return rest[:i], rest[i+1:], true
}
