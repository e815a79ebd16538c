package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/kdd-cni/kdd-cni/internal/podcidr"
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
	stdin, err := calicoEntry(stdin)
	if err != nil {
		return err
	}
	inv, err := p.begin("STATUS", &skel.CmdArgs{StdinData: stdin}, false)
	if err != nil {
		return err
	}
	defer inv.End(nil)
	api, err := inv.API()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.APITimeout)
	defer cancel()
	v, err := api.Version(ctx)
	if err != nil {
		return err
	}
	node, err := inv.PodCIDRNode()
	if err != nil {
		return err
	}
	cidrs, err := podcidr.NodePodCIDRs(ctx, api, node)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "datastore ok: apiserver %s, node %q podCIDRs %+v\n", v, node, cidrs.CIDRs)
	return nil
}

// calicoEntry accepts a single plugin configuration or a conflist, from
// which it takes the `calico` plugin (with the list's name and cniVersion).
func calicoEntry(data []byte) ([]byte, error) {
	var list struct {
		Name       string           `json:"name"`
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil || list.Plugins == nil {
		return data, nil // not a conflist: Load reports any syntax error
	}
	for _, pl := range list.Plugins {
		if pl["type"] == "calico" {
			pl["name"], pl["cniVersion"] = list.Name, list.CNIVersion
			return json.Marshal(pl)
		}
	}
	return nil, errors.New("the conflist has no plugin of type calico")
}
