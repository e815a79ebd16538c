// Package plugin orchestrates the `calico` CNI commands. Each command is a
// short list of named steps; the steps live in their own packages: netconf
// (configuration), podcidr (usePodCidr), ipamexec (host-local), plan (pure),
// dataplane (kernel), wep + kube (the WorkloadEndpoint on the Pod).
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	cniutils "github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/journal"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/logging"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podlock"
)

// Versions are the CNI spec versions the plugin speaks.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

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

// invocation is one command's parsed input.
type invocation struct {
	args   *skel.CmdArgs
	conf   *netconf.NetConf
	id     netconf.Identity
	hasPod bool
	log    *slog.Logger
	// rollback bounds the undoing of a failed ADD (within the ADD's bound).
	rollback context.Context
	logClose io.Closer
	start    time.Time
}

// begin parses the configuration and identity and opens the log. requirePod
// makes missing K8S_POD_* arguments an error (ADD, CHECK); DEL tolerates them.
func (p *Plugin) begin(command string, args *skel.CmdArgs, requirePod bool) (*invocation, error) {
	if err := checkRuntimeArgs(command, args); err != nil {
		return nil, err
	}
	conf, err := netconf.Load(args.StdinData, p.Env)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, err)
	}
	id, err := netconf.ParseIdentity(args.Args)
	hasPod := err == nil
	if err != nil && (requirePod || !errors.Is(err, netconf.ErrNoPod)) {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	log, closer, err := logging.New(logging.Options{Level: conf.LogLevel, Path: conf.LogFilePath,
		MaxSize: conf.LogFileMaxSize, MaxCount: conf.LogFileMaxCount})
	if err != nil {
		return nil, err
	}
	log = log.With("cmd", command, "containerID", args.ContainerID, "ifName", args.IfName,
		"netns", args.Netns, "namespace", id.Namespace, "pod", id.Pod)
	inv := &invocation{args: args, conf: conf, id: id, hasPod: hasPod, log: log, logClose: closer, start: time.Now()}
	return inv, nil
}

// checkRuntimeArgs refuses what the runtime must never pass, before
// anything is read or changed: container IDs and interface names that could
// reach outside a file name or a link name, and the plugin's own network
// namespace as the container's (DEL would then delete a node interface).
func checkRuntimeArgs(command string, args *skel.CmdArgs) error {
	if command == "GC" || command == "STATUS" {
		return nil // no container
	}
	if err := cniutils.ValidateContainerID(args.ContainerID); err != nil {
		return err
	}
	if args.IfName != "" {
		if err := cniutils.ValidateInterfaceName(args.IfName); err != nil {
			return err
		}
	}
	if args.Netns == "" {
		return nil
	}
	own, err := os.Stat("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("failed to read the plugin's own network namespace: %w", err)
	}
	target, err := os.Stat(args.Netns)
	if err != nil {
		return nil // gone or unreadable: each command handles that itself
	}
	if os.SameFile(own, target) {
		return types.NewError(types.ErrInvalidEnvironmentVariables,
			"invalid CNI_NETNS "+args.Netns+": it is the network namespace the plugin runs in, not a container's", "")
	}
	return nil
}

// replayJournal sends annotation clears that earlier DELs could not. It
// costs one directory read when the journal is empty, never fails the
// command, and is bounded in time within the command's own bound (ctx).
func (p *Plugin) replayJournal(ctx context.Context, inv *invocation) {
	pending, err := journal.Pending(inv.conf.JournalDir())
	if err != nil || len(pending) == 0 {
		return
	}
	api, err := p.api(inv.conf)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, replayBudget)
	defer cancel()
	n, err := journal.Replay(ctx, inv.conf.JournalDir(), api, replayLimit)
	inv.log.Info("replayed pending annotation clears", "done", n, "pending", len(pending), "err", err)
}

// lockPod serializes invocations for this pod on this node.
func (p *Plugin) lockPod(ctx context.Context, inv *invocation) (*podlock.Lock, error) {
	if !inv.hasPod {
		return nil, nil
	}
	prefix := naming.InterfacePrefix(p.Env.Getenv("FELIX_INTERFACEPREFIX"))
	return podlock.Acquire(ctx, inv.conf.LockDir(), naming.HostVeth(prefix, inv.id.Namespace, inv.id.Pod))
}

// step logs how long a named step took (debug level), and restarts the clock.
func (inv *invocation) step(name string, since *time.Time) {
	inv.log.Debug("step", "name", name, "took", time.Since(*since))
	*since = time.Now()
}

// end logs the outcome once and closes the log.
func (inv *invocation) end(err error) {
	if err != nil {
		inv.log.Error("failed", "err", err, "after", time.Since(inv.start))
	} else {
		inv.log.Info("done", "after", time.Since(inv.start))
	}
	_ = inv.logClose.Close()
}

// api builds the API client from the netconf and environment seeds.
func (p *Plugin) api(conf *netconf.NetConf) (*kube.Client, error) {
	return kube.New(conf.APIAccess(p.Env, p.APITimeout))
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

// wrap prefixes errors with the pod they concern.
func (inv *invocation) wrap(err error) error {
	if err == nil || !inv.hasPod {
		return err
	}
	return fmt.Errorf("pod %s/%s: %w", inv.id.Namespace, inv.id.Pod, err)
}
