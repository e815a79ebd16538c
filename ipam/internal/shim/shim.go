// Package shim is the podcidr IPAM plugin: any main plugin (ptp, bridge,
// calico) can name it as "ipam": {"type": "podcidr", ...}. It reads this
// node's podCIDRs from the Kubernetes API, rewrites usePodCidr /
// usePodCidrIPv6, and delegates every command to host-local with all other
// keys passed through.
package shim

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/invocation"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/sweep"
)

// Delegate is the IPAM plugin that does the allocating.
const Delegate = "host-local"

// Versions are the CNI spec versions the shim speaks.
var Versions = version.PluginSupports(netconf.SupportedVersions...)

const commandTimeout = 30 * time.Second

// Shim holds what the commands depend on.
type Shim struct {
	Env        netconf.Env
	APITimeout time.Duration
}

// New returns a shim bound to the process environment.
func New() *Shim {
	return &Shim{
		Env:        netconf.OSEnv(),
		APITimeout: kube.DefaultTimeout,
	}
}

// Funcs are the skel callbacks.
func (s *Shim) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cnierror.Wrap(s.Add), Del: cnierror.Wrap(s.Del), Check: cnierror.Wrap(s.Check),
		Status: s.Status, GC: cnierror.Wrap(s.GC)}
}

// open decodes the invocation's input once.
func (s *Shim) open(command string, args *skel.CmdArgs) (*invocation.Frame, error) {
	return invocation.Open(args, invocation.Options{Plugin: "podcidr", Command: command, IPAM: true,
		Env: s.Env, APITimeout: s.APITimeout})
}

// Add: node podCIDRs → rewrite → host-local ADD → result.
func (s *Shim) Add(args *skel.CmdArgs) (err error) {
	f, err := s.open("ADD", args)
	if err != nil {
		return err
	}
	defer func() { f.End(err) }()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	delegated, err := resolve(ctx, f)
	if err != nil {
		return err
	}
	res, err := ipamexec.Call{Plugin: Delegate, Config: delegated, Args: args}.Add(ctx)
	if err != nil {
		return err
	}
	f.Log.Info("allocated", "ips", len(res.IPs))
	return types.PrintResult(res, f.Conf.CNIVersion)
}

// resolve turns the shim's configuration into host-local's.
func resolve(ctx context.Context, f *invocation.Frame) ([]byte, error) {
	conf, err := f.IPAMConf()
	if err != nil {
		return nil, err
	}
	conf = conf.WithIPAMType(Delegate)
	if !conf.Families().Any() {
		return conf.Unchanged()
	}
	node, err := f.PodCIDRNode()
	if err != nil {
		return nil, err
	}
	if watched, ok := nodestate.WatchedPodCIDRs(f.Conf.StateDir, node); ok { // install-cni keeps it current
		return conf.Rewrite(watched.CIDRs)
	}
	api, err := f.API()
	if err != nil {
		return nil, err
	}
	cidrs, err := invocation.ReadPodCIDRs(ctx, api, node)
	if err != nil {
		return nil, err
	}
	return conf.Rewrite(cidrs.CIDRs)
}

// released is host-local's configuration for DEL, CHECK and GC, which
// resolve leases by container ID: no API call.
func released(f *invocation.Frame) ([]byte, error) {
	conf, err := f.IPAMConf()
	if err != nil {
		return nil, err
	}
	return conf.WithIPAMType(Delegate).ForRelease()
}

// Del releases the lease through host-local.
func (s *Shim) Del(args *skel.CmdArgs) error {
	return s.onLease("DEL", args, func(ctx context.Context, c ipamexec.Call) error { return c.Del(ctx) })
}

// Check verifies the lease through host-local.
func (s *Shim) Check(args *skel.CmdArgs) error {
	return s.onLease("CHECK", args, func(ctx context.Context, c ipamexec.Call) error { return c.Check(ctx) })
}

// onLease runs a command on the container's existing lease through
// host-local (no API call: leases are found by container ID).
func (s *Shim) onLease(command string, args *skel.CmdArgs, run func(context.Context, ipamexec.Call) error) (err error) {
	f, err := s.open(command, args)
	if err != nil {
		return err
	}
	defer func() { f.End(err) }()
	conf, err := released(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return run(ctx, ipamexec.Call{Plugin: Delegate, Config: conf, Args: args})
}

// Status runs the node's checks (invocation.Health): ready, or error 50
// with every reason.
func (s *Shim) Status(args *skel.CmdArgs) (err error) {
	f, err := s.open("STATUS", args)
	if err != nil {
		return err
	}
	defer func() { f.End(err) }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.APITimeout)
	defer cancel()
	return f.Status(ctx, "podcidr", true)
}

// GC releases, through host-local's DEL, the leases of stale attachments
// by the same rules as the calico plugin's GC: not in
// cni.dev/valid-attachments nor of a sandbox in kdd-cni.dev/valid-sandboxes,
// and, with kdd-cni.dev/gc-grace-seconds, found stale by passes at least
// that far apart (package sweep). Nothing when the key is absent.
func (s *Shim) GC(args *skel.CmdArgs) (err error) {
	f, err := s.open("GC", args)
	if err != nil {
		return err
	}
	defer func() { f.End(err) }()
	if _, given := f.Conf.ValidAttachments(); !given {
		return nil
	}
	conf, err := released(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	pass, err := sweep.Begin(ctx, f.Conf.State().GC(), f.Conf.State().Locks(), f.Conf.Name, "podcidr", f.Conf.GCGrace())
	if err != nil {
		return err
	}
	live := f.Conf.GCLive()
	_, err = ipamexec.ReleaseStale(ctx, Delegate, conf, args, func(a types.GCAttachment) bool { return live(a) || !pass.Due(a) })
	return errors.Join(err, pass.End())
}
