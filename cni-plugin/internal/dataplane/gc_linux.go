package dataplane

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/internal/naming"
)

// OrphanHostVeth is a host veth kdd-cni created whose attachment is gone.
type OrphanHostVeth struct {
	Name, Alias, ContainerID, IfName string
}

// OrphanHostVeths lists host veths named with prefix that kdd-cni created
// for network (their alias names it and the owning attachment) and whose
// attachment valid rejects. Links without kdd-cni's alias, or of another
// network, are never listed.
func OrphanHostVeths(prefix, network string, valid func(containerID, ifName string) bool) ([]OrphanHostVeth, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("failed to list links: %w", err)
	}
	var out []OrphanHostVeth
	for _, l := range links {
		a := l.Attrs()
		if !strings.HasPrefix(a.Name, prefix) || l.Type() != "veth" {
			continue
		}
		net, id, ifName, ours := naming.ParseHostVethAlias(a.Alias)
		if !ours || net != network || valid(id, ifName) {
			continue
		}
		out = append(out, OrphanHostVeth{Name: a.Name, Alias: a.Alias, ContainerID: id, IfName: ifName})
	}
	return out, nil
}

// RemoveOrphanHostVeth deletes o if the link of that name still carries
// o's alias (an ADD may have replaced it since it was listed). It reports
// whether it deleted it.
func RemoveOrphanHostVeth(o OrphanHostVeth) (bool, error) {
	l, err := netlinksafe.LinkByName(o.Name)
	if errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to read host veth %q: %w", o.Name, err)
	}
	if l.Attrs().Alias != o.Alias {
		return false, nil
	}
	if err := netlink.LinkDel(l); err != nil && !errors.As(err, &netlink.LinkNotFoundError{}) {
		return false, fmt.Errorf("failed to delete orphan host veth %q: %w", o.Name, err)
	}
	return true, nil
}
