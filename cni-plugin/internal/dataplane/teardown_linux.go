package dataplane

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/cni-plugin/internal/plan"
)

// Owned names a host veth and the alias that marks it as this sandbox's
// (naming.HostVethAlias); empty when the pod is unknown.
type Owned struct {
	HostVeth string
	Alias    string
}

// Teardown deletes the container interface (its host peer and host routes
// go with it). A missing namespace or interface is success, and the whole
// step is bounded by timeout. Then the host veth is deleted by name only if
// its alias says this sandbox created it: a newer sandbox of the same pod
// may own that name now, and a namespace that is already gone may leave its
// veth to the kernel's deferred clean-up, which can take seconds.
func Teardown(netnsPath, ifName string, owned Owned, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var err error
		if netnsPath != "" {
			err = deleteInNetNS(netnsPath, ifName)
		}
		done <- errors.Join(err, deleteOwnedHostVeth(owned))
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("failed to delete %q in %s: timed out after %s", ifName, netnsPath, timeout)
	}
}

func deleteOwnedHostVeth(o Owned) error {
	if o.HostVeth == "" {
		return nil
	}
	link, err := netlinksafe.LinkByName(o.HostVeth)
	if err != nil || link.Attrs().Alias != o.Alias {
		return nil // gone, or another sandbox's
	}
	if err := netlink.LinkDel(link); err != nil && !gone(err) {
		return fmt.Errorf("failed to delete host veth %q: %w", o.HostVeth, err)
	}
	return nil
}

// gone tells whether a link operation failed because the link no longer
// exists (deleted meanwhile, e.g. with its peer or its namespace).
func gone(err error) bool {
	return errors.As(err, &netlink.LinkNotFoundError{}) || errors.Is(err, syscall.ENODEV)
}

func deleteInNetNS(netnsPath, ifName string) error {
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifName)
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("failed to look up %q: %w", ifName, err)
		}
		if err := netlink.LinkDel(link); err != nil && !gone(err) {
			return fmt.Errorf("failed to delete %q: %w", ifName, err)
		}
		return nil
	})
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return nil // the sandbox is gone, and its interfaces with it
	}
	return err
}

// Remove undoes Setup (ADD rollback): deleting the host veth it created
// deletes the container peer and the host routes with it. A same-named link
// that another sandbox created since is left alone.
func Remove(p plan.Plan, hostIndex int) error {
	link, err := netlink.LinkByIndex(hostIndex)
	if err != nil || link.Attrs().Name != p.HostVeth {
		return nil // already gone
	}
	if err := netlink.LinkDel(link); err != nil && !gone(err) {
		return fmt.Errorf("failed to delete host veth %q: %w", p.HostVeth, err)
	}
	return nil
}
