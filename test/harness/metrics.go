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

// auditPolicy records every request of the CNI identities (ours and
// Calico's), resource or not, once (when its response is complete), and
// nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    users: ["` + CNIUser + `", "` + CalicoCNIUser + `"]
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

// AuditedSince lists every request user made after mark, as the apiserver
// audited them: "VERB resource[/subresource]" or "VERB /non/resource/url"
// (verbs upper-case, e.g. "PATCH pods/status", "GET /version").
func (cp *ControlPlane) AuditedSince(mark int64, user string) ([]string, error) {
	time.Sleep(300 * time.Millisecond) // the last event is written just after its response
	f, err := os.Open(cp.auditLog())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(mark, io.SeekStart); err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Verb       string `json:"verb"`
			RequestURI string `json:"requestURI"`
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
		out = append(out, strings.ToUpper(ev.Verb)+" "+what)
	}
	return out, sc.Err()
}
