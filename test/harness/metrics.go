package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var requestTotal = regexp.MustCompile(`^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$`)
var label = regexp.MustCompile(`(\w+)="([^"]*)"`)

// RequestCounts reads the apiserver's own apiserver_request_total counter,
// summed per "VERB resource[/subresource]" (e.g. "PATCH pods/status").
func (cp *ControlPlane) RequestCounts(ctx context.Context) (map[string]float64, error) {
	body, err := cp.Admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to read apiserver metrics: %w", err)
	}
	counts := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := requestTotal.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range label.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if labels["resource"] == "" {
			continue // non-resource URLs such as /metrics itself
		}
		key := labels["verb"] + " " + labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		counts[key] += v
	}
	return counts, sc.Err()
}

// CountDelta returns after-before for the keys whose resource is one of resources.
func CountDelta(before, after map[string]float64, resources ...string) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		for _, r := range resources {
			if matchResource(k, r) && v-before[k] > 0 {
				d[k] = v - before[k]
			}
		}
	}
	return d
}

func matchResource(key, resource string) bool {
	_, res, _ := bytes.Cut([]byte(key), []byte(" "))
	base, _, _ := bytes.Cut(res, []byte("/"))
	return string(base) == resource
}

// CNIUser is the CNI identity's user name (conf/manifests/rbac-cni.yaml).
const CNIUser = "system:serviceaccount:kube-system:kdd-cni-plugin"

// CalicoCNIUser is the identity Calico's own calico binary runs as where
// a test or the benchmark runs it (Calico's calico-cni-plugin account).
const CalicoCNIUser = "system:serviceaccount:kube-system:calico-cni-plugin"

// FelixUser, TyphaUser and InstallUser are the identities Felix
// (calico-node), Typha and install-cni run as (conf/manifests/).
const (
	FelixUser   = "system:serviceaccount:kube-system:calico-node"
	TyphaUser   = "system:serviceaccount:kube-system:calico-typha"
	InstallUser = "system:serviceaccount:kube-system:kdd-cni-node"
)

// auditPolicy records every request of the CNI identities (ours and
// Calico's), install-cni's, Felix's and Typha's, resource or not, when its response
// starts (watches) and completes, and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["` + CNIUser + `", "` + CalicoCNIUser + `", "` + InstallUser + `", "` + FelixUser + `", "` + TyphaUser + `"]
  - level: None
`

func (cp *ControlPlane) auditLog() string { return filepath.Join(cp.Dir, "audit.log") }

// AuditMark is where the audit log ends now; AuditedSince reads after it.
func (cp *ControlPlane) AuditMark() int64 {
	st, err := os.Stat(cp.auditLog())
	if err != nil {
		return 0
	}
	return st.Size()
}

// AuditEvent is one audited request: What is "VERB resource[/subresource]"
// or "VERB /non/resource/url" (verbs upper-case, e.g. "PATCH pods/status",
// "GET /version"); Stage is ResponseStarted (long-running requests such as
// watches, as they begin) or ResponseComplete.
type AuditEvent struct {
	What, Stage, SourceIP string
}

// AuditedSince lists every request user made after mark whose response
// completed, as the apiserver audited them (AuditEvent.What).
func (cp *ControlPlane) AuditedSince(mark int64, user string) ([]string, error) {
	evs, err := cp.AuditEvents(mark, user)
	var out []string
	for _, ev := range evs {
		if ev.Stage == "ResponseComplete" {
			out = append(out, ev.What)
		}
	}
	return out, err
}

// AuditEvents lists every audit event of user's requests after mark.
func (cp *ControlPlane) AuditEvents(mark int64, user string) ([]AuditEvent, error) {
	time.Sleep(300 * time.Millisecond) // the last event is written just after its response
	f, err := os.Open(cp.auditLog())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(mark, io.SeekStart); err != nil {
		return nil, err
	}
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Verb       string   `json:"verb"`
			Stage      string   `json:"stage"`
			RequestURI string   `json:"requestURI"`
			SourceIPs  []string `json:"sourceIPs"`
			User       struct {
				Username string `json:"username"`
			} `json:"user"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("failed to parse audit event: %w", err)
		}
		if ev.User.Username != user {
			continue
		}
		what := ev.RequestURI
		if ev.ObjectRef != nil {
			what = ev.ObjectRef.Resource
			if ev.ObjectRef.Subresource != "" {
				what += "/" + ev.ObjectRef.Subresource
			}
		}
		e := AuditEvent{What: strings.ToUpper(ev.Verb) + " " + what, Stage: ev.Stage}
		if len(ev.SourceIPs) > 0 {
			e.SourceIP = ev.SourceIPs[0]
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

var series = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ([0-9.e+-]+)$`)

// APIServerMetric sums the apiserver's own series of metric name whose
// labels include match (e.g. apiserver_longrunning_requests, verb=WATCH).
func (cp *ControlPlane) APIServerMetric(ctx context.Context, name string, match map[string]string) (float64, error) {
	body, err := cp.Admin.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to read apiserver metrics: %w", err)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
lines:
	for sc.Scan() {
		m := series.FindStringSubmatch(sc.Text())
		if m == nil || m[1] != name {
			continue
		}
		labels := map[string]string{}
		for _, l := range label.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		for k, v := range match {
			if labels[k] != v {
				continue lines
			}
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return 0, fmt.Errorf("failed to parse %s: %w", sc.Text(), err)
		}
		sum, found = sum+v, true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("apiserver metric %s%v not found", name, match)
	}
	return sum, nil
}
