package installer

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/kdd-cni/kdd-cni/install/internal/metrics"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// observed is what the sidecar last learnt about its node, read by the
// metrics endpoint while the sidecar's loop updates it.
type observed struct {
	mu     sync.Mutex
	node   NodeInfo
	plugin []byte // the calico plugin's configuration, as the runtime passes it
	expiry time.Time
	warned map[string]bool // capacity warnings already recorded
}

func (o *observed) set(node NodeInfo, plugin []byte, expiry time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.node, o.expiry = node, expiry
	if plugin != nil {
		o.plugin = plugin
	}
}

func (o *observed) setNode(node NodeInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.node = node
}

func (o *observed) get() (NodeInfo, []byte, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.node, o.plugin, o.expiry
}

func (o *observed) hasWarned(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.warned[key]
}

func (o *observed) setWarned(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.warned == nil {
		o.warned = map[string]bool{}
	}
	o.warned[key] = true
}

// pluginConf is the calico entry of the conflist as the runtime hands it
// to the plugin (nil if there is none).
func pluginConf(conflist []byte) []byte {
	b, err := netconf.FromConflist(conflist, "calico")
	if err != nil {
		return nil
	}
	return b
}

// poolFamily is one podCIDR family the configuration allocates from.
type poolFamily struct {
	name, cidr string
	usable     uint64
}

// pools are the families whose addresses host-local leases from the node's
// podCIDRs, with their usable sizes.
func pools(node NodeInfo, plugin []byte) []poolFamily {
	conf, err := podcidr.Parse(plugin)
	if err != nil {
		return nil
	}
	cidrs, err := podcidr.ByFamily("", node.PodCIDRs)
	if err != nil {
		return nil
	}
	fams := conf.Families()
	var out []poolFamily
	for _, f := range []struct {
		on         bool
		name, cidr string
	}{{fams.V4, "IPv4", cidrs.V4}, {fams.V6, "IPv6", cidrs.V6}} {
		if !f.on || f.cidr == "" {
			continue
		}
		if n, err := podcidr.Usable(f.cidr); err == nil {
			out = append(out, poolFamily{name: f.name, cidr: f.cidr, usable: n})
		}
	}
	return out
}

// ipamUsage is the metrics' view of the pool: leases counted in
// host-local's store against the podCIDRs' usable addresses.
func (in *Installer) ipamUsage() []metrics.Usage {
	node, plugin, _ := in.seen.get()
	ps := pools(node, plugin)
	if len(ps) == 0 {
		return nil
	}
	v4, v6, err := ipamexec.InUse(plugin)
	if err != nil {
		return nil
	}
	var out []metrics.Usage
	for _, p := range ps {
		used := v4
		if p.name == "IPv6" {
			used = v6
		}
		out = append(out, metrics.Usage{Family: p.name, InUse: float64(used), Capacity: float64(p.usable)})
	}
	return out
}

// CapacityReason is the reason of the Warning Event recorded on a Node
// whose kubelet admits more pods than its podCIDR has addresses.
const CapacityReason = "PodCIDRTooSmall"

// warnCapacity records a Warning Event on the Node when the kubelet's
// maxPods exceeds the usable addresses of a podCIDR the pods draw from:
// once per sidecar and podCIDR, and not while an earlier one is recorded.
func (in *Installer) warnCapacity(ctx context.Context, api *kubeclient.Client, events record.EventRecorder) {
	node, plugin, _ := in.seen.get()
	for _, p := range pools(node, plugin) {
		if node.MaxPods <= 0 || uint64(node.MaxPods) <= p.usable {
			continue
		}
		key := fmt.Sprintf("%s/%s/%d", node.UID, p.cidr, node.MaxPods)
		if in.seen.hasWarned(key) {
			continue
		}
		msg := fmt.Sprintf("the kubelet's maxPods (%d) exceeds the %d usable %s addresses of podCIDR %s: pods past that will fail to start (raise the controller-manager's --node-cidr-mask-size or lower maxPods)",
			node.MaxPods, p.usable, p.name, p.cidr)
		recorded, err := in.nodeEventRecorded(ctx, api, CapacityReason)
		if err != nil {
			in.Log.Error("failed to look for the capacity warning", "err", err)
			continue // try again on the next node check
		}
		if recorded {
			in.Log.Info("capacity warning already recorded on the node", "reason", CapacityReason)
		} else {
			ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: in.Cfg.NodeName, UID: types.UID(node.UID)}
			events.Event(ref, corev1.EventTypeWarning, CapacityReason, msg)
		}
		in.Log.Warn(msg)
		in.seen.setWarned(key)
	}
}
