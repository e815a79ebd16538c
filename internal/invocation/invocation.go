// Package invocation is one CNI command's frame, shared by the `calico`
// plugin and the `podcidr` IPAM shim: the runtime's arguments checked, stdin
// decoded once (typed for the keys the plugins read, generically for what
// passes through to host-local), the pod identity, host veth name, nodename
// and API client worked out once, and the log opened. Steps take their
// values from the frame instead of decoding (env, conf, stdin) again.
package invocation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	cniutils "github.com/containernetworking/cni/pkg/utils"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/health"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/logging"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// Options say how a command reads its input.
type Options struct {
	Plugin  string // for the log: "calico" or "podcidr"
	Command string // ADD, DEL, CHECK, STATUS, GC
	// IPAM loads the configuration as an IPAM plugin sees it (keys in the
	// ipam section override the network's) and skips the netns check.
	IPAM bool
	// RequirePod makes missing K8S_POD_* arguments an error (ADD, CHECK).
	RequirePod bool
	Env        netconf.Env
	APITimeout time.Duration // per API request
}

// Frame is one invocation's decoded input.
type Frame struct {
	Command string
	Args    *skel.CmdArgs
	Env     netconf.Env
	Conf    *netconf.NetConf
	// Pod is the pod from CNI_ARGS; HasPod is false when DEL, STATUS or GC
	// were called without one.
	Pod    netconf.Identity
	HasPod bool
	// HostVeth is the pod's host-side veth name ("" without a pod);
	// HostAlias the alias naming its network and attachment.
	HostVeth  string
	HostAlias string
	Log       *slog.Logger
	Start     time.Time
	// Deadline, when set, bounds building the API client (an exec
	// credential plugin): the command's own deadline.
	Deadline time.Time
	plugin   string
	stepsMu  sync.Mutex
	steps    map[string]float64 // seconds, for the invocation's record
	at       map[string]float64 // seconds after Start, for the record's timeline

	ipam    *podcidr.Conf // stdin decoded generically; nil if ipamErr
	ipamErr error
	timeout time.Duration

	nodeOnce sync.Once
	node     string
	nodeErr  error
	apiOnce  sync.Once
	api      *kube.Client
	apiErr   error
	logClose io.Closer
}

// Open checks the runtime's arguments, decodes the configuration and the
// pod identity, and opens the log. The error carries the CNI code.
func Open(args *skel.CmdArgs, o Options) (*Frame, error) {
	if err := checkRuntimeArgs(o, args); err != nil {
		return nil, err
	}
	load := netconf.Load
	if o.IPAM {
		load = netconf.LoadForIPAM
	}
	conf, err := load(args.StdinData, o.Env)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, err)
	}
	if err := nodestate.Check(conf.StateDir); err != nil {
		return nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, err)
	}
	f := &Frame{Command: o.Command, Args: args, Env: o.Env, Conf: conf, Start: time.Now(), timeout: o.APITimeout,
		plugin: o.Plugin, steps: map[string]float64{}}
	f.Pod, err = netconf.ParseIdentity(args.Args)
	f.HasPod = err == nil
	if err != nil && (o.RequirePod || !errors.Is(err, netconf.ErrNoPod)) {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if f.HasPod {
		f.HostVeth = naming.HostVeth(conf.InterfacePrefix, f.Pod.Namespace, f.Pod.Pod)
	}
	f.HostAlias = naming.HostVethAlias(conf.Name, args.ContainerID, args.IfName)
	f.ipam, f.ipamErr = podcidr.Parse(args.StdinData)
	log, closer := logging.New(logging.Options{Level: conf.LogLevel, Path: conf.LogFilePath,
		MaxSize: conf.LogFileMaxSize, MaxCount: conf.LogFileMaxCount, MaxAge: conf.LogFileMaxAge, Format: conf.LogFormat})
	f.Log = log.With("plugin", o.Plugin, "cmd", o.Command, "containerID", args.ContainerID, "ifName", args.IfName,
		"netns", args.Netns, "namespace", f.Pod.Namespace, "pod", f.Pod.Pod)
	f.logClose = closer
	return f, nil
}

// IPAMConf is the configuration decoded generically, to hand on to the IPAM
// plugin; its error is an invalid ipam section (code 7).
func (f *Frame) IPAMConf() (*podcidr.Conf, error) {
	if f.ipamErr != nil {
		return nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, f.ipamErr)
	}
	return f.ipam, nil
}

// ReleaseConf is the IPAM configuration for an existing lease (DEL, CHECK,
// GC, rollback): the podCIDR symbols become placeholders, since host-local
// finds leases by container ID and interface. As given when there are none
// or the section cannot be decoded (the IPAM plugin then says why).
func (f *Frame) ReleaseConf() []byte {
	if f.ipam == nil || !f.ipam.Families().Any() {
		return f.Args.StdinData
	}
	if b, err := f.ipam.ForRelease(); err == nil {
		return b
	}
	return f.Args.StdinData
}

// PodCIDRNode is the name of the Node whose podCIDRs the configuration
// uses, resolved once (nodename, its file, the hostname; node_name wins).
func (f *Frame) PodCIDRNode() (string, error) {
	f.nodeOnce.Do(func() {
		var nodename string
		nodename, f.nodeErr = f.Conf.ResolveNodename(f.Env)
		if f.nodeErr == nil {
			f.node = f.Conf.PodCIDRNode(nodename)
		}
	})
	return f.node, f.nodeErr
}

// API is the API client for the configured identity, built once; safe for
// concurrent steps.
func (f *Frame) API() (*kube.Client, error) {
	f.apiOnce.Do(func() {
		start := time.Now()
		a := f.Conf.APIAccess(f.Env, f.timeout)
		a.ExecDeadline = f.Deadline
		f.api, f.apiErr = kube.New(a)
		f.Time("credentials", time.Since(start))
	})
	return f.api, f.apiErr
}

// ReadPodCIDRs reads a Node's podCIDRs from the API server, by family.
func ReadPodCIDRs(ctx context.Context, api *kube.Client, node string) (podcidr.NodeCIDRs, error) {
	uid, cidrs, err := api.NodePodCIDRs(ctx, node)
	if err != nil {
		return podcidr.NodeCIDRs{}, err
	}
	return podcidr.ForNode(node, uid, cidrs)
}

// Health runs the node's checks (CNI STATUS of both plugins): datastore,
// identity, token, podCIDRs, the IP pool, the journal. hostLocal says the
// addresses come from host-local over the podCIDRs, whose leases are then
// counted against them.
func (f *Frame) Health(ctx context.Context, hostLocal bool) []health.Finding {
	n, bad := health.ForConfig(health.Input{Conf: f.Conf, IPAM: f.ipam, IPAMErr: f.ipamErr, HostLocal: hostLocal,
		Env: f.Env, API: f.API})
	if bad != nil {
		return bad
	}
	n.VerifiedFile = f.Conf.State().Verified()
	return health.Check(ctx, n)
}

// Status is CNI STATUS for both plugins: the node's checks (Health), each
// warning logged, and Unready's error when one fails.
func (f *Frame) Status(ctx context.Context, plugin string, hostLocal bool) error {
	findings := f.Health(ctx, hostLocal)
	for _, x := range findings {
		if x.Severity == health.Warn {
			f.Log.Warn("status", "check", x.Check, "msg", x.Message)
		}
	}
	return Unready(plugin, findings)
}

// Unready is STATUS's error for failed findings: code 50 ("plugin not
// available") with every reason in the message. A runtime shows message and
// details as one line ("msg; details": containerd puts it in the Node's
// Ready condition), so the details do not repeat the reasons: they say
// where the full report is.
func Unready(plugin string, findings []health.Finding) error {
	failed := health.Failed(findings)
	if len(failed) == 0 {
		return nil
	}
	return types.NewError(types.ErrPluginNotAvailable, plugin+" is not ready: "+health.Summary(failed), UnreadyDetails)
}

// UnreadyDetails are STATUS's error details.
const UnreadyDetails = "kddctl status on the node reports every check"

// Step logs how long a named step took (debug level), keeps it for the
// invocation's record, and restarts the clock.
func (f *Frame) Step(name string, since *time.Time) {
	f.Time(name, time.Since(*since))
	*since = time.Now()
}

// Time keeps how long a named piece of work took (debug log and the
// invocation's record); safe from concurrent steps.
func (f *Frame) Time(name string, took time.Duration) {
	f.Log.Debug("step", "name", name, "took", took)
	f.stepsMu.Lock()
	defer f.stepsMu.Unlock()
	f.steps[name] += took.Seconds()
}

// Mark keeps when a named event of the invocation's timeline happened.
func (f *Frame) Mark(event string) {
	at := time.Since(f.Start)
	f.stepsMu.Lock()
	defer f.stepsMu.Unlock()
	if f.at == nil {
		f.at = map[string]float64{}
	}
	f.at[event] = at.Seconds()
}

// End logs the outcome once, appends the invocation's record for the
// metrics (never failing the command), and closes the log.
func (f *Frame) End(err error) {
	took := time.Since(f.Start)
	if err != nil {
		f.Log.Error("failed", "err", err, "after", took)
	} else {
		f.Log.Info("done", "after", took)
	}
	f.stepsMu.Lock()
	rec := nodestate.OpRecord{Time: f.Start, Plugin: f.plugin, Command: f.Command, Result: Result(err),
		Seconds: took.Seconds(), Steps: f.steps, At: f.at}
	if f.api != nil {
		rec.API = f.api.Requests()
		for name, d := range f.api.Timings() {
			rec.Steps[name] = d.Seconds()
		}
		for event, t := range f.api.Marks() {
			if rec.At == nil {
				rec.At = map[string]float64{}
			}
			rec.At[event] = t.Sub(f.Start).Seconds()
		}
	}
	f.stepsMu.Unlock()
	if !f.Conf.State().Records().Append(rec) {
		f.Log.Debug("metrics record dropped")
	}
	_ = f.logClose.Close()
}

// Result is an outcome as the metrics label it: "success", or the CNI
// error code the runtime is given.
func Result(err error) string {
	if err == nil {
		return "success"
	}
	var te *types.Error
	if errors.As(cnierror.Coded(err), &te) {
		return strconv.Itoa(int(te.Code))
	}
	return strconv.Itoa(int(types.ErrInternal))
}

// Wrap prefixes errors with the pod they concern.
func (f *Frame) Wrap(err error) error {
	if err == nil || !f.HasPod {
		return err
	}
	return fmt.Errorf("pod %s/%s: %w", f.Pod.Namespace, f.Pod.Pod, err)
}

// checkRuntimeArgs refuses what the runtime must never pass, before
// anything is read or changed: container IDs and interface names that could
// reach outside a file name or a link name, and the plugin's own network
// namespace as the container's (DEL would then delete a node interface).
func checkRuntimeArgs(o Options, args *skel.CmdArgs) error {
	if o.Command == "GC" || o.Command == "STATUS" {
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
	if args.Netns == "" || o.IPAM {
		return nil // an IPAM plugin never enters the namespace
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
