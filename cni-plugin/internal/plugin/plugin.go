// Package plugin orchestrates the `calico` CNI commands. Each command is a
// short list of named steps; the steps live in their own packages: netconf
// (configuration), podcidr (usePodCidr), ipamexec (host-local), plan (pure),
// dataplane (kernel), wep + kube (the WorkloadEndpoint on the Pod).
package plugin

import (
	"context"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/invocation"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/replay"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports(netconf.SupportedVersions...)

// Time bounds. Every API request has its own (kube.DefaultTimeout); these
// bound whole commands and the namespace step of DEL.
const (
	addTimeout      = 10 * time.Second // ADD ends within this, rollback included, when the datastore is slow
	rollbackReserve = 3 * time.Second  // the part of addTimeout kept for undoing a failed ADD
	delTimeout      = 25 * time.Second
	checkTimeout    = 25 * time.Second
	gcTimeout       = 25 * time.Second
	teardownTimeout = 15 * time.Second
	replayBudget    = 2 * time.Second // journal replay per invocation
	replayLimit     = 8
)

// Plugin holds what the commands depend on.
type Plugin struct {
	Env        netconf.Env
	APITimeout time.Duration
}

// New returns a plugin bound to the process environment and filesystem.
func New() *Plugin {
	return &Plugin{
		Env:        netconf.OSEnv(),
		APITimeout: kube.DefaultTimeout,
	}
}

// Funcs are the skel callbacks; their errors carry the CNI error codes.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cnierror.Wrap(p.Add), Del: cnierror.Wrap(p.Del), Check: cnierror.Wrap(p.Check),
		Status: p.Status, GC: cnierror.Wrap(p.GC)}
}

// command is one invocation: its frame, and for ADD the context that
// bounds undoing a failure.
type command struct {
	*invocation.Frame
	// rollback bounds the undoing of a failed ADD (within the ADD's bound).
	rollback context.Context
}

// begin opens the invocation's frame. requirePod makes missing K8S_POD_*
// arguments an error (ADD, CHECK); DEL tolerates them.
func (p *Plugin) begin(cmd string, args *skel.CmdArgs, requirePod bool) (*command, error) {
	f, err := invocation.Open(args, invocation.Options{Plugin: "calico", Command: cmd, RequirePod: requirePod,
		Env: p.Env, APITimeout: p.APITimeout})
	if err != nil {
		return nil, err
	}
	return &command{Frame: f}, nil
}

// replayJournal sends annotation clears that earlier DELs could not. It
// costs one directory read when the journal is empty, never fails the
// command, and is bounded in time within the command's own bound (ctx).
func (p *Plugin) replayJournal(ctx context.Context, inv *command) {
	pending, err := inv.Conf.State().Journal().Pending()
	if err != nil || len(pending) == 0 {
		return
	}
	api, err := inv.API()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, replayBudget)
	defer cancel()
	n, err := replay.Journal(ctx, inv.Conf.State().Journal(), api, replayLimit)
	inv.Log.Info("replayed pending annotation clears", "done", n, "pending", len(pending), "err", err)
}

// lockPod serializes invocations for this pod on this node.
func (p *Plugin) lockPod(ctx context.Context, inv *command) (*nodestate.Lock, error) {
	if !inv.HasPod {
		return nil, nil
	}
	return inv.Conf.State().Locks().Acquire(ctx, inv.HostVeth)
}

func withTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// addContexts bound an ADD as a whole: rollback ends at the deadline, work
// rollbackReserve before it, so undoing a failure always has time left and
// never runs past the bound.
func addContexts() (work, rollback context.Context, cancel func()) {
	deadline := time.Now().Add(addTimeout)
	rollback, cancelRollback := context.WithDeadline(context.Background(), deadline)
	work, cancelWork := context.WithDeadline(rollback, deadline.Add(-rollbackReserve))
	return work, rollback, func() { cancelWork(); cancelRollback() }
}
