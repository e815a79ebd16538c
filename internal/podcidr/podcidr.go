// Package podcidr rewrites a host-local IPAM configuration that names the
// node's podCIDR symbolically: "usePodCidr" (IPv4) and "usePodCidrIPv6" in
// ipam.subnet or in ipam.ranges[][].subnet. Only those values change; every
// other key of the network configuration passes through untouched. Pure.
package podcidr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// The symbolic subnets (matched case-insensitively, as Calico does).
const (
	UsePodCidr     = "usePodCidr"
	UsePodCidrIPv6 = "usePodCidrIPv6"
)

// CIDRs are a node's podCIDRs, at most one per family.
type CIDRs struct {
	V4 string `json:"v4,omitempty"`
	V6 string `json:"v6,omitempty"`
}

// String lists the podCIDRs, IPv4 first, comma-separated.
func (c CIDRs) String() string {
	return strings.Trim(c.V4+","+c.V6, ",")
}

// NodeCIDRs are one Node object's podCIDRs, by family.
type NodeCIDRs struct {
	Node  string `json:"node"`
	UID   string `json:"uid"`
	CIDRs CIDRs  `json:"cidrs"`
}

// ForNode is the Node's podCIDRs (spec.podCIDRs as read) by family.
func ForNode(node, uid string, podCIDRs []string) (NodeCIDRs, error) {
	byFamily, err := ByFamily(node, podCIDRs)
	return NodeCIDRs{Node: node, UID: uid, CIDRs: byFamily}, err
}

// ByFamily splits a Node's spec.podCIDRs into families. nodeName is used in
// error messages only.
func ByFamily(nodeName string, podCIDRs []string) (CIDRs, error) {
	var c CIDRs
	if len(podCIDRs) == 0 {
		return c, fmt.Errorf("node %q has no podCIDR: is the controller-manager allocating node CIDRs (--allocate-node-cidrs)?", nodeName)
	}
	for _, s := range podCIDRs {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			return c, fmt.Errorf("invalid podCIDR %q on node %q: %w", s, nodeName, err)
		}
		slot := &c.V6
		if ip.To4() != nil {
			slot = &c.V4
		}
		if *slot != "" {
			return c, fmt.Errorf("node %q has two podCIDRs of one family (%s, %s)", nodeName, *slot, n)
		}
		*slot = n.String()
	}
	return c, nil
}

// subnetRef is one place in the config that holds a subnet.
type subnetRef struct {
	owner map[string]any // the object holding "subnet" (ipam or a range)
	value string
}

func (r subnetRef) symbol() string {
	switch {
	case strings.EqualFold(r.value, UsePodCidr):
		return UsePodCidr
	case strings.EqualFold(r.value, UsePodCidrIPv6):
		return UsePodCidrIPv6
	}
	return ""
}

// Conf is a network configuration decoded generically, once per invocation:
// every other key passes through to the delegate untouched. Its outputs
// (Rewrite, ForRelease, WithIPAMType) never change it.
type Conf struct {
	root     map[string]any
	ipam     map[string]any
	refs     []subnetRef
	ipamType string // set in every output when not empty
}

// StaticSubnets are the ipam subnets that are not podCIDR symbols.
func (c *Conf) StaticSubnets() []string {
	var out []string
	for _, r := range c.refs {
		if r.symbol() == "" {
			out = append(out, r.value)
		}
	}
	return out
}

// WithIPAMType is the configuration whose outputs name typ as ipam.type,
// e.g. to hand a podcidr configuration to host-local.
func (c *Conf) WithIPAMType(typ string) *Conf {
	cp := *c
	cp.ipamType = typ
	return &cp
}

// Parse decodes a network configuration and finds its subnets.
func Parse(netconf []byte) (*Conf, error) {
	dec := json.NewDecoder(bytes.NewReader(netconf))
	dec.UseNumber() // keep numbers exactly as given
	c := &Conf{}
	if err := dec.Decode(&c.root); err != nil {
		return nil, fmt.Errorf("failed to parse network configuration: %w", err)
	}
	var err error
	c.ipam, c.refs, err = index(c.root)
	return c, err
}

// index finds the ipam section and every subnet in it.
func index(root map[string]any) (map[string]any, []subnetRef, error) {
	ipam, ok := root["ipam"].(map[string]any)
	if !ok {
		return nil, nil, errors.New("invalid configuration: no ipam section")
	}
	var refs []subnetRef
	if s, ok := ipam["subnet"].(string); ok {
		refs = append(refs, subnetRef{owner: ipam, value: s})
	}
	raw, ok := ipam["ranges"]
	if !ok {
		return ipam, refs, nil
	}
	sets, ok := raw.([]any)
	if !ok {
		return nil, nil, errors.New("invalid ipam.ranges: not a list of range sets")
	}
	for i, set := range sets {
		ranges, ok := set.([]any)
		if !ok {
			return nil, nil, fmt.Errorf("invalid ipam.ranges[%d]: not a list of ranges", i)
		}
		for j, r := range ranges {
			obj, ok := r.(map[string]any)
			if !ok {
				return nil, nil, fmt.Errorf("invalid ipam.ranges[%d][%d]: not an object", i, j)
			}
			if s, ok := obj["subnet"].(string); ok {
				refs = append(refs, subnetRef{owner: obj, value: s})
			}
		}
	}
	return ipam, refs, nil
}

// output marshals a deep copy of the configuration changed by edit, which
// gets the copy's ipam section and subnet references.
func (c *Conf) output(edit func(ipam map[string]any, refs []subnetRef) error) ([]byte, error) {
	root := deepCopy(c.root).(map[string]any)
	ipam, refs, err := index(root)
	if err != nil {
		return nil, err
	}
	if err := edit(ipam, refs); err != nil {
		return nil, err
	}
	if c.ipamType != "" {
		ipam["type"] = c.ipamType
	}
	return json.Marshal(root)
}

// deepCopy copies decoded JSON (objects and arrays; scalars are values).
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}

// Families says which podCIDR families a configuration names.
type Families struct {
	V4, V6 bool
}

// Any is true when Rewrite needs the node's podCIDRs.
func (f Families) Any() bool { return f.V4 || f.V6 }

// Families reports which symbols the configuration uses.
func (c *Conf) Families() Families {
	var f Families
	for _, r := range c.refs {
		switch r.symbol() {
		case UsePodCidr:
			f.V4 = true
		case UsePodCidrIPv6:
			f.V6 = true
		}
	}
	return f
}

// Check verifies that cidrs has every family f names.
func (f Families) Check(nodeName string, cidrs CIDRs) error {
	switch {
	case f.V4 && cidrs.V4 == "":
		return fmt.Errorf("node %q has no IPv4 podCIDR (the configuration uses usePodCidr)", nodeName)
	case f.V6 && cidrs.V6 == "":
		return fmt.Errorf("node %q has no IPv6 podCIDR (the configuration uses usePodCidrIPv6)", nodeName)
	}
	return nil
}

// Rewrite is the configuration with the symbols replaced by cidrs.
func (c *Conf) Rewrite(cidrs CIDRs) ([]byte, error) {
	return c.output(func(_ map[string]any, refs []subnetRef) error { return rewrite(refs, cidrs) })
}

func rewrite(refs []subnetRef, cidrs CIDRs) error {
	for _, r := range refs {
		switch r.symbol() {
		case UsePodCidr:
			if cidrs.V4 == "" {
				return errors.New("usePodCidr found but the node has no IPv4 podCIDR")
			}
			r.owner["subnet"] = cidrs.V4
		case UsePodCidrIPv6:
			if cidrs.V6 == "" {
				return errors.New("usePodCidrIPv6 found but the node has no IPv6 podCIDR")
			}
			r.owner["subnet"] = cidrs.V6
		}
	}
	return nil
}

// Rewrite for release: host-local releases a lease by container ID and
// interface name whatever the ranges say, but it still validates the ranges,
// and rejects range sets that overlap ("range set 0 overlaps with 1"). So each
// symbol becomes a small documentation-range subnet that overlaps no other
// configured subnet (Calico's 0.0.0.0/0 overlaps every static range and makes
// host-local refuse the DEL, leaking the IP). No API call is needed.
var releaseCandidates = map[string][]string{
	UsePodCidr:     {"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/16"},
	UsePodCidrIPv6: {"2001:db8::/64", "2001:db8:1::/64", "3fff::/64", "3fff:1::/64"},
}

// ForRelease is the configuration with the symbols replaced by
// non-overlapping placeholder subnets, for DEL, GC and CHECK, which
// host-local resolves by container ID; unchanged bytes-wise apart from that.
func (c *Conf) ForRelease() ([]byte, error) {
	return c.output(func(_ map[string]any, refs []subnetRef) error { return forRelease(refs) })
}

func forRelease(refs []subnetRef) error {
	var taken []*net.IPNet
	for _, r := range refs {
		if r.symbol() == "" {
			if _, n, err := net.ParseCIDR(r.value); err == nil {
				taken = append(taken, n)
			}
		}
	}
	for _, r := range refs {
		sym := r.symbol()
		if sym == "" {
			continue
		}
		n, err := placeholder(sym, taken)
		if err != nil {
			return err
		}
		taken = append(taken, n)
		r.owner["subnet"] = n.String()
		// Limits that belonged to the real podCIDR would fall outside the placeholder.
		for _, k := range []string{"rangeStart", "rangeEnd", "gateway"} {
			delete(r.owner, k)
		}
	}
	return nil
}

// placeholder picks the first of the candidate blocks' leading /30s (/126s)
// that overlaps nothing taken.
func placeholder(sym string, taken []*net.IPNet) (*net.IPNet, error) {
	for _, cand := range releaseCandidates[sym] {
		_, block, _ := net.ParseCIDR(cand)
		bits := 8 * len(block.IP)
		for k := 0; k < 64; k++ {
			ip := append(net.IP(nil), block.IP...)
			ip[len(ip)-1] = byte(4 * k)
			n := &net.IPNet{IP: ip, Mask: net.CIDRMask(bits-2, bits)}
			if !overlapsAny(n, taken) {
				return n, nil
			}
		}
	}
	return nil, fmt.Errorf("failed to find a placeholder subnet for %s that overlaps no configured range", sym)
}

func overlapsAny(n *net.IPNet, taken []*net.IPNet) bool {
	for _, t := range taken {
		if t.Contains(n.IP) || n.Contains(t.IP) {
			return true
		}
	}
	return false
}

// Unchanged is the configuration as given (with WithIPAMType's type).
func (c *Conf) Unchanged() ([]byte, error) {
	return c.output(func(map[string]any, []subnetRef) error { return nil })
}

// Usable is how many addresses host-local hands out from a subnet it is
// given whole: all but the network address and the gateway (the first
// host), and for IPv4 the broadcast address. Capped at 1<<62.
func Usable(cidr string) (uint64, error) {
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		return 0, fmt.Errorf("invalid CIDR %q: %w", cidr, err)
	}
	ones, bits := n.Mask.Size()
	hostBits := bits - ones
	if hostBits >= 62 {
		return 1 << 62, nil
	}
	size := uint64(1) << hostBits
	reserved := uint64(2)
	if bits == 32 {
		reserved = 3
	}
	if size <= reserved {
		return 0, nil
	}
	return size - reserved, nil
}
