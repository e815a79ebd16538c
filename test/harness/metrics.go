package harness

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
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
