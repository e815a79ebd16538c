// Package confcheck checks a conflist the way the calico plugin will read
// it, before any runtime does: `kddctl validate` reports what is wrong, and
// install-cni refuses to write a conflist that fails. No request is sent.
package confcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
)

// Env is the environment a conflist is checked in: none of the plugin's
// seed variables (the runtime's are not known here), files read as given.
func Env() netconf.Env {
	return netconf.Env{Getenv: func(string) string { return "" }, ReadFile: os.ReadFile, Hostname: os.Hostname}
}

// Result is a checked conflist.
type Result struct {
	Plugin []byte           // the calico plugin's configuration, as the runtime passes it
	Conf   *netconf.NetConf // as the plugin decodes it
	IPAM   *podcidr.Conf
	// Warnings do not stop the plugin (e.g. keys it ignores).
	Warnings []string
}

// Conflist checks conflist: valid JSON with a name and a calico plugin,
// every key of that plugin of the right type and value, an ipam section the
// plugin accepts. Keys the plugin does not know are warnings: it ignores
// them, and a misspelt one silently does nothing.
func Conflist(conflist []byte, env netconf.Env) (*Result, error) {
	plugin, err := netconf.FromConflist(conflist, "calico")
	if err != nil {
		return nil, err
	}
	r := &Result{Plugin: plugin}
	if r.Conf, err = netconf.Load(plugin, env); err != nil {
		return nil, fmt.Errorf("the calico plugin would refuse it: %w", err)
	}
	if v := r.Conf.CNIVersion; !slices.Contains(netconf.SupportedVersions, v) {
		return nil, fmt.Errorf("the calico plugin would refuse it: unsupported cniVersion %q: it speaks %s",
			v, strings.Join(netconf.SupportedVersions, ", "))
	}
	if r.IPAM, err = podcidr.Parse(plugin); err != nil {
		return nil, fmt.Errorf("the calico plugin would refuse its ipam section: %w", err)
	}
	for _, s := range r.IPAM.StaticSubnets() {
		if _, _, err := net.ParseCIDR(s); err != nil {
			return nil, fmt.Errorf("host-local would refuse its ipam section: subnet %q is not a CIDR", s)
		}
	}
	if t := r.Conf.IPAM.Type; t != "host-local" && t != "podcidr" {
		r.Warnings = append(r.Warnings, fmt.Sprintf("ipam.type %q: kdd-cni is built and tested with host-local", t))
	}
	if r.Conf.IPAM.Type == "host-local" && !r.IPAM.Families().Any() {
		r.Warnings = append(r.Warnings, `ipam: no "usePodCidr" subnet: addresses do not come from the node's podCIDR`)
	}
	unknown, err := unknownKeys(plugin)
	if err != nil {
		return nil, err
	}
	for _, k := range unknown {
		r.Warnings = append(r.Warnings, fmt.Sprintf("key %q is not one the calico plugin reads: ignored", k))
	}
	return r, nil
}

// ignoredKeys are keys a conflist entry may carry that the plugin itself
// has no field for: the runtime's and libcni's.
var ignoredKeys = map[string]bool{"args": true, "runtimeConfig": true, "prevResult": true}

// unknownKeys are the top-level keys of plugin that NetConf has no field for.
func unknownKeys(plugin []byte) ([]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(plugin, &m); err != nil {
		return nil, errors.New("the calico plugin's entry is not a JSON object")
	}
	known := map[string]bool{}
	collectTags(reflect.TypeFor[netconf.NetConf](), known)
	var out []string
	for k := range m {
		if !known[k] && !ignoredKeys[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

func collectTags(t reflect.Type, into map[string]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && tag == "" {
			collectTags(f.Type, into)
			continue
		}
		if tag != "" && tag != "-" {
			into[tag] = true
		}
	}
}
