package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/invocation"
)

// TestDatastore is `calico -t`: with the network configuration on stdin, it
// checks that the API server answers with the configured credentials and,
// when the IPAM configuration names the node's podCIDRs, that they can be
// read. Its contract is the one scripts gating on Calico's `calico -t`
// rely on: exit 0 and nothing on stdout when the check passes; exit 1 and
// a CNI error (code 100, "data store connection failed", the cause as its
// details) on stdout when it fails. What it found goes to diag.
func (p *Plugin) TestDatastore(stdin io.Reader, stdout, diag io.Writer) int {
	data, err := io.ReadAll(stdin)
	if err == nil {
		err = p.testDatastore(data, diag)
	}
	if err != nil {
		fmt.Fprintf(diag, "datastore check failed: %v\n", err)
		_ = json.NewEncoder(stdout).Encode(types.Error{Code: 100, Msg: "data store connection failed", Details: err.Error()})
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
	ipam, err := inv.IPAMConf()
	if err != nil {
		return err
	}
	families := ipam.Families()
	if !families.Any() {
		fmt.Fprintf(out, "datastore ok: apiserver %s\n", v)
		return nil
	}
	node, err := inv.PodCIDRNode()
	if err != nil {
		return err
	}
	cidrs, err := invocation.ReadPodCIDRs(ctx, api, node)
	if err != nil {
		return err
	}
	if err := families.Check(node, cidrs.CIDRs); err != nil {
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
