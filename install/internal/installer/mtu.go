package installer

import (
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/kdd-cni/kdd-cni/install/internal/flannel"
	"github.com/kdd-cni/kdd-cni/install/internal/render"
	"github.com/kdd-cni/kdd-cni/internal/naming"
)

// podMTU is the MTU the conflist gives pods: CNI_MTU when set; else the
// FLANNEL_MTU of a flanneld on the node (its VXLAN backend costs 50
// bytes); else the default, 1500. A subnet file that cannot be read keeps
// the MTU last written, and says why.
func (in *Installer) podMTU() (mtu int, source string) {
	if !in.Cfg.MTUFromFlannel {
		return in.Cfg.MTU, "CNI_MTU"
	}
	mtu, found, err := flannel.MTU(in.Cfg.FlannelSubnetFile)
	if err != nil && err.Error() != in.mtuErr { // said once, not every poll
		in.Log.Warn("ignoring flannel's subnet file for the pods' MTU", "err", err)
	}
	in.mtuErr = ""
	if err != nil {
		in.mtuErr = err.Error()
	}
	switch {
	case err != nil && in.mtu != 0:
		return in.mtu, in.mtuSource
	case err != nil || !found:
		return in.Cfg.MTU, "default"
	}
	return mtu, "flannel " + in.Cfg.FlannelSubnetFile
}

// values are the conflist placeholders' values, with the pods' MTU.
func (in *Installer) values(server string, mtu int) map[string]string {
	cfg := *in.Cfg
	cfg.MTU = mtu
	return render.Values(&cfg, server)
}

// mtuChanged reports whether the pods' MTU now differs from the one in the
// conflist written last (flanneld came up, or its backend changed).
func (in *Installer) mtuChanged() bool {
	if !in.Cfg.MTUFromFlannel || in.conflist == nil {
		return false
	}
	mtu, _ := in.podMTU()
	return mtu != in.mtu
}

// warnLargerMTU names the host veths whose MTU is above the pods' MTU now
// (the sidecar runs in the host's network namespace): pods started before
// flanneld wrote its MTU keep theirs until they are re-created, and their
// packets larger than the path's are lost or fragmented.
func (in *Installer) warnLargerMTU(mtu int) {
	links, err := netlink.LinkList()
	if err != nil {
		in.Log.Debug("failed to list links for their MTU", "err", err)
		return
	}
	var above []string
	for _, l := range links {
		if a := l.Attrs(); strings.HasPrefix(a.Name, naming.DefaultInterfacePrefix) && a.MTU > mtu {
			above = append(above, a.Name)
		}
	}
	if len(above) > 0 {
		in.Log.Warn("pods started before this MTU keep a larger one until they are re-created", "mtu", mtu, "hostVeths", above)
	}
}
