package installer

import (
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// shadowedBy lists the network configuration files in the host's CNI
// config dir that sort before ours. A runtime (containerd, CRI-O) takes
// the first by name, so while any is there the node's pods are networked
// by that network, not by kdd-cni. Another network's conflist that sorts
// after ours (flannel's 10-flannel.conflist) is never used, and is left
// alone: it belongs to the other network's installer.
func (in *Installer) shadowedBy() ([]string, error) {
	files, err := libcni.ConfFiles(in.Cfg.HostNetDir(), []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, err
	}
	var before []string // in name order, as ConfFiles lists them
	for _, f := range files {
		if name := filepath.Base(f); name < in.Cfg.ConfName {
			before = append(before, name)
		}
	}
	return before, nil
}

// warnShadowed logs, when it changes, which configuration files sort
// before ours: the runtime uses the first of them instead of kdd-cni.
func (in *Installer) warnShadowed() {
	before, err := in.shadowedBy()
	if err != nil {
		in.Log.Debug("failed to list the CNI config dir", "err", err)
		return
	}
	now := strings.Join(before, ",")
	if now == in.shadowing {
		return
	}
	in.shadowing = now
	if now == "" {
		in.Log.Info("no other network configuration sorts before ours", "conflist", in.Cfg.ConfName)
		return
	}
	in.Log.Warn("another network configuration sorts before ours: the container runtime uses it, not kdd-cni, for new pods; remove it or rename ours (CNI_CONF_NAME)",
		"conflist", in.Cfg.ConfName, "before", before)
}
