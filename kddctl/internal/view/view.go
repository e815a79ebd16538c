// Package view synthesizes Calico WorkloadEndpoints from Pods, as Calico's
// Kubernetes datastore does (nothing else is stored), and renders them as
// calicoctl does. Pure.
package view

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"text/tabwriter"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kdd-cni/kdd-cni/internal/naming"
)

// WorkloadEndpoint mirrors projectcalico.org/v3 WorkloadEndpoint.
type WorkloadEndpoint struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata of a WorkloadEndpoint.
type Metadata struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Spec of a WorkloadEndpoint.
type Spec struct {
	Orchestrator       string   `json:"orchestrator"`
	Node               string   `json:"node"`
	ContainerID        string   `json:"containerID,omitempty"`
	Pod                string   `json:"pod"`
	Endpoint           string   `json:"endpoint"`
	ServiceAccountName string   `json:"serviceAccountName,omitempty"`
	IPNetworks         []string `json:"ipNetworks"`
	Profiles           []string `json:"profiles"`
	InterfaceName      string   `json:"interfaceName"`
}

const endpoint = "eth0"

// FromPods builds the endpoints of networked, scheduled, unfinished pods,
// sorted by namespace and name.
func FromPods(pods []corev1.Pod, vethPrefix string) []WorkloadEndpoint {
	var out []WorkloadEndpoint
	for _, p := range pods {
		if p.Spec.NodeName == "" || p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		m := p.ObjectMeta
		labels := map[string]string{}
		for k, v := range m.Labels {
			labels[k] = v
		}
		labels["projectcalico.org/namespace"] = m.Namespace
		labels["projectcalico.org/orchestrator"] = "k8s"
		sa := p.Spec.ServiceAccountName
		profiles := []string{"kns." + m.Namespace}
		if sa != "" {
			profiles = append(profiles, "ksa."+m.Namespace+"."+sa)
			if len(sa) < 63 {
				labels["projectcalico.org/serviceaccount"] = sa
			}
		}
		out = append(out, WorkloadEndpoint{
			APIVersion: "projectcalico.org/v3", Kind: "WorkloadEndpoint",
			Metadata: Metadata{Name: naming.WorkloadEndpoint(p.Spec.NodeName, m.Name, endpoint), Namespace: m.Namespace, Labels: labels},
			Spec: Spec{
				Orchestrator: "k8s", Node: p.Spec.NodeName, ContainerID: m.Annotations["cni.projectcalico.org/containerID"],
				Pod: m.Name, Endpoint: endpoint, ServiceAccountName: sa, IPNetworks: ipNetworks(p),
				Profiles: profiles, InterfaceName: naming.HostVeth(vethPrefix, m.Namespace, m.Name),
			},
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Metadata, out[j].Metadata
		return a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name)
	})
	return out
}

// ipNetworks prefers status.podIPs, then the CNI annotation, as Felix does.
func ipNetworks(p corev1.Pod) []string {
	var nets []string
	for _, ip := range p.Status.PodIPs {
		if parsed := net.ParseIP(ip.IP); parsed != nil {
			bits := 32
			if parsed.To4() == nil {
				bits = 128
			}
			nets = append(nets, fmt.Sprintf("%s/%d", parsed, bits))
		}
	}
	if len(nets) == 0 {
		for _, n := range strings.Split(p.Annotations["cni.projectcalico.org/podIPs"], ",") {
			if n = strings.TrimSpace(n); n != "" {
				nets = append(nets, n)
			}
		}
	}
	if nets == nil {
		nets = []string{}
	}
	return nets
}

// Write renders endpoints: format "" (table), "wide", "json" or "yaml".
func Write(w io.Writer, weps []WorkloadEndpoint, format string, allNamespaces bool) error {
	switch format {
	case "json", "yaml":
		list := map[string]any{"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpointList", "items": weps}
		if weps == nil {
			list["items"] = []WorkloadEndpoint{}
		}
		b, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return err
		}
		if format == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintf(w, "%s\n", strings.TrimRight(string(b), "\n"))
		return err
	case "", "wide":
	default:
		return fmt.Errorf("unknown output format %q: want wide, json or yaml", format)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	cols := []string{"HOSTNAME", "ORCHESTRATOR", "WORKLOAD", "NAME"}
	if allNamespaces {
		cols = append([]string{"NAMESPACE"}, cols...)
	}
	if format == "wide" {
		cols = append(cols, "NETWORKS", "INTERFACE", "WORKLOADENDPOINT")
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	for _, e := range weps {
		row := []string{e.Spec.Node, e.Spec.Orchestrator, e.Metadata.Namespace + "." + e.Spec.Pod, e.Spec.Endpoint}
		if allNamespaces {
			row = append([]string{e.Metadata.Namespace}, row...)
		}
		if format == "wide" {
			nets := strings.Join(e.Spec.IPNetworks, ",")
			if nets == "" {
				nets = "<none>"
			}
			row = append(row, nets, e.Spec.InterfaceName, e.Metadata.Name)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}
