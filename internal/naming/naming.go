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

// MaxAlias is the longest interface alias the kernel keeps (IFALIASZ-1).
const MaxAlias = 255

// HostVethAlias is the interface alias set on a host veth: it records the
// network and the attachment (container ID and interface) that own it, so
// GC for one network never touches another's links.
func HostVethAlias(network, containerID, ifName string) string {
	return aliasPrefix + network + "/" + containerID + "/" + ifName
}

// ParseHostVethAlias reverses HostVethAlias; ok is false for links kdd-cni
// did not create (or created before aliases named the network).
func ParseHostVethAlias(alias string) (network, containerID, ifName string, ok bool) {
	rest, found := strings.CutPrefix(alias, aliasPrefix)
	parts := strings.Split(rest, "/")
	if !found || len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
