package plugin

import (
	"context"
	"fmt"
	"io"

	"github.com/kdd-cni/kdd-cni/cni-plugin/pkg/netconf"
)

// TestDatastore is `calico -t`: with the network configuration on stdin, it
// checks that the API server answers with the configured credentials and that
// this node's podCIDRs can be read. It returns the process exit code.
func (p *Plugin) TestDatastore(stdin io.Reader, out io.Writer) int {
	data, err := io.ReadAll(stdin)
	if err == nil {
		err = p.testDatastore(data, out)
	}
	if err != nil {
		fmt.Fprintf(out, "datastore check failed: %v\n", err)
		return 1
	}
	return 0
}

func (p *Plugin) testDatastore(stdin []byte, out io.Writer) error {
	conf, err := netconf.Load(stdin, p.Env)
	if err != nil {
		return err
	}
	api, err := p.api(conf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.APITimeout)
	defer cancel()
	v, err := api.Version(ctx)
	if err != nil {
		return err
	}
	nodename, err := conf.ResolveNodename(p.Env)
	if err != nil {
		return err
	}
	cidrs, err := api.NodePodCIDRs(ctx, conf.PodCIDRNode(nodename))
	if err != nil {
		return fmt.Errorf("failed to read node %q: %w", conf.PodCIDRNode(nodename), err)
	}
	fmt.Fprintf(out, "datastore ok: apiserver %s, node %q podCIDRs %v\n", v, conf.PodCIDRNode(nodename), cidrs)
	return nil
}
