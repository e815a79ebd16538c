package dataplane

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/internal/naming"
)

// RemoveOrphanHostVeths deletes host veths named with prefix that kdd-cni
// created for network (their alias names it and the owning attachment) and
// whose attachment valid rejects. Links without kdd-cni's alias, or of
// another network, are never touched. It returns the names it removed.
func RemoveOrphanHostVeths(prefix, network string, valid func(containerID, ifName string) bool) ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
	}
	var removed []string
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Name, prefix) || l.Type() != "veth" {
			continue
		}
		net, id, ifName, ours := naming.ParseHostVethAlias(a.Alias)
		if !ours || net != network || valid(id, ifName) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
			errs = append(errs, fmt.Errorf("failed to delete orphan host veth %q: %w", a.Name, err))
			continue
		}
		removed = append(removed, a.Name)
	}
	return removed, errors.Join(errs...)
}
