// Package podopts reads the pod annotations Calico's plugin honours and
// decides, as Calico does with a non-Calico IPAM, which are applied, which
// only validated (Felix reads them from the Pod itself) and which refused.
// Pure.
package podopts

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// Calico's pod annotations.
const (
	HwAddr                = "cni.projectcalico.org/hwAddr"
	IPAddrs               = "cni.projectcalico.org/ipAddrs"
	IPAddrsNoIpam         = "cni.projectcalico.org/ipAddrsNoIpam"
	FloatingIPs           = "cni.projectcalico.org/floatingIPs"
	AllowedSourcePrefixes = "cni.projectcalico.org/allowedSourcePrefixes"
)

// Options are what the annotations change in the pod's network.
type Options struct {
	// ContainerMAC is the MAC the container interface gets (nil: the kernel's).
	ContainerMAC net.HardwareAddr
}

// Parse validates the annotations for a network whose IPAM plugin is
// ipamType (never calico-ipam here) and returns the options they set.
func Parse(annotations map[string]string, ipamType string, f netconf.FeatureControl) (Options, error) {
	var o Options
	addrs, noIpam := annotations[IPAddrs], annotations[IPAddrsNoIpam]
	switch {
	case addrs != "" && noIpam != "":
		return o, errors.New("can't have both annotations: 'ipAddrs' and 'ipAddrsNoIpam' in use at the same time")
	case noIpam != "":
		return o, fmt.Errorf("ipAddrsNoIpam is not compatible with configured IPAM: %s", ipamType)
	case addrs != "":
		return o, fmt.Errorf("ipAddrs is not compatible with configured IPAM: %s", ipamType)
	}
	if s, ok := annotations[HwAddr]; ok {
		mac, err := parseMAC(s)
		if err != nil {
			return o, err
		}
		o.ContainerMAC = mac
	}
	if s := annotations[FloatingIPs]; s != "" {
		if !f.FloatingIPs {
			return o, errors.New("requested feature is not enabled: floating_ips")
		}
		if err := parseList(s, FloatingIPs, func(v string) bool { return net.ParseIP(v) != nil }); err != nil {
			return o, err
		}
	}
	if s := annotations[AllowedSourcePrefixes]; s != "" {
		valid := func(v string) bool { _, _, err := net.ParseCIDR(v); return err == nil }
		if err := parseList(s, AllowedSourcePrefixes, valid); err != nil {
			return o, err
		}
	}
	return o, nil
}

// parseMAC accepts what the kernel accepts on a veth: a unicast, non-zero
// 48-bit address.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("failed to parse MAC address %q provided via %s: %w", s, HwAddr, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("invalid MAC address %q provided via %s: must be 48 bits", s, HwAddr)
	}
	if mac[0]&1 == 1 || mac.String() == "00:00:00:00:00:00" {
		return nil, fmt.Errorf("invalid MAC address %q provided via %s: must be unicast and non-zero", s, HwAddr)
	}
	return mac, nil
}

// parseList checks a JSON list of strings, each of which must be valid.
func parseList(s, annotation string, valid func(string) bool) error {
	var items []string
	if err := json.Unmarshal([]byte(s), &items); err != nil {
		return fmt.Errorf("failed to parse annotation %s %q as a JSON list of strings: %w", annotation, s, err)
	}
	for _, v := range items {
		if !valid(v) {
			return fmt.Errorf("invalid entry %q in annotation %s", v, annotation)
		}
	}
	return nil
}
