// Package shim is the podcidr IPAM plugin: any main plugin (ptp, bridge,
// calico) can name it as "ipam": {"type": "podcidr", ...}. It reads this
// node's podCIDRs from the Kubernetes API, rewrites usePodCidr /
// usePodCidrIPv6, and delegates every command to host-local with all other
// keys passed through.
package shim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/kdd-cni/kdd-cni/internal/cnierror"
	"github.com/kdd-cni/kdd-cni/internal/ipamexec"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/logging"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// Delegate is the IPAM plugin that does the allocating.
const Delegate = "host-local"

// Versions are the CNI spec versions the shim speaks.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

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

func (s *Shim) begin(args *skel.CmdArgs) (*netconf.NetConf, *slog.Logger, io.Closer, error) {
	conf, err := netconf.LoadForIPAM(args.StdinData, s.Env)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %w", cnierror.ErrInvalidConfig, err)
	}
	log, closer, err := logging.New(logging.Options{Level: conf.LogLevel, Path: conf.LogFilePath})
	if err != nil {
		return nil, nil, nil, err
	}
	return conf, log.With("plugin", "podcidr", "containerID", args.ContainerID, "ifName", args.IfName), closer, nil
}

// Add: node podCIDRs → rewrite → host-local ADD → result.
func (s *Shim) Add(args *skel.CmdArgs) error {
	conf, log, closer, err := s.begin(args)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	delegated, err := s.resolve(ctx, conf, args.StdinData)
	if err != nil {
		return err
	}
	res, err := ipamexec.Call{Plugin: Delegate, Config: delegated, Args: args}.Add(ctx)
	if err != nil {
		return err
	}
	log.Info("allocated", "ips", len(res.IPs))
	return types.PrintResult(res, conf.CNIVersion)
}

// resolve turns the shim's configuration into host-local's.
func (s *Shim) resolve(ctx context.Context, conf *netconf.NetConf, stdin []byte) ([]byte, error) {
	fams, err := podcidr.Symbols(stdin)
	if err != nil {
		return nil, err
	}
	if fams.Any() {
		api, err := kube.New(conf.APIAccess(s.Env, s.APITimeout))
		if err != nil {
			return nil, err
		}
		nodename, err := conf.ResolveNodename(s.Env)
		if err != nil {
			return nil, err
		}
		cidrs, err := podcidr.NodePodCIDRs(ctx, api, conf.PodCIDRNode(nodename))
		if err != nil {
			return nil, err
		}
		if stdin, err = podcidr.Rewrite(stdin, cidrs.CIDRs); err != nil {
			return nil, err
		}
	}
	return podcidr.WithIPAMType(stdin, Delegate)
}

// released is host-local's configuration for DEL, CHECK and GC, which
// resolve leases by container ID: no API call.
func released(stdin []byte) ([]byte, error) {
	conf, err := podcidr.RewriteForRelease(stdin)
	if err != nil {
		return nil, err
	}
	return podcidr.WithIPAMType(conf, Delegate)
}

// Del releases the lease through host-local.
func (s *Shim) Del(args *skel.CmdArgs) error {
	conf, err := released(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return ipamexec.Call{Plugin: Delegate, Config: conf, Args: args}.Del(ctx)
}

// Check verifies the lease through host-local.
func (s *Shim) Check(args *skel.CmdArgs) error {
	conf, err := released(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return ipamexec.Call{Plugin: Delegate, Config: conf, Args: args}.Check(ctx)
}

// Status is ready when the API server answers and the node has every
// podCIDR family the configuration names (else error 50).
func (s *Shim) Status(args *skel.CmdArgs) error {
	conf, _, closer, err := s.begin(args)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.APITimeout)
	defer cancel()
	if err := podcidr.Ready(ctx, s.Env, conf, args.StdinData, s.APITimeout); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "podcidr is not ready: "+err.Error(), "")
	}
	return nil
}

// GC releases, through host-local's DEL, the leases of attachments not in
// cni.dev/valid-attachments (nothing when the key is absent).
func (s *Shim) GC(args *skel.CmdArgs) error {
	valid, given, err := netconf.ValidAttachments(args.StdinData)
	if err != nil || !given {
		return err
	}
	conf, err := released(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_, err = ipamexec.ReleaseStale(ctx, Delegate, conf, args, func(a types.GCAttachment) bool { return valid[a] })
	return err
}
