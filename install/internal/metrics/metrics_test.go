package metrics

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
)

// Scrape parses the text exposition, as Prometheus would.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

func TestDrainAndScrape(t *testing.T) {
	st := nodestate.Dir(t.TempDir())
	records := st.Records()
	exp := time.Unix(1900000000, 0)
	m := New(Sources{State: st,
		IPAM:        func() []Usage { return []Usage{{Family: "IPv4", InUse: 3, Capacity: 253}} },
		TokenExpiry: func() time.Time { return exp }})
	for range 3 {
		records.Append(nodestate.OpRecord{Plugin: "calico", Command: "ADD", Result: "success", Seconds: 0.02,
			Steps: map[string]float64{"ipam": 0.005}, API: map[string]int{"GET": 1, "PATCH": 1}})
	}
	records.Append(nodestate.OpRecord{Plugin: "calico", Command: "DEL", Result: "11", Seconds: 3, API: map[string]int{"PATCH": 1}})
	f, _ := os.OpenFile(filepath.Join(string(records), "records"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("not json\n")
	f.Close()
	_ = st.Journal().Write(nodestate.Entry{Namespace: "ns", Pod: "p", ContainerID: "c"})
	for range 2 { // two phases
		if err := m.Drain(); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrape(t, m)
	ops := fams["kdd_cni_operation_duration_seconds"]
	counts := map[string]uint64{}
	for _, mt := range ops.GetMetric() {
		l := map[string]string{}
		for _, p := range mt.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		counts[l["command"]+"/"+l["result"]] = mt.GetHistogram().GetSampleCount()
	}
	if counts["ADD/success"] != 3 || counts["DEL/11"] != 1 || len(counts) != 2 {
		t.Errorf("operations: %v", counts)
	}
	api := map[string]float64{}
	for _, mt := range fams["kdd_cni_api_requests_total"].GetMetric() {
		api[mt.GetLabel()[0].GetValue()+"/"+mt.GetLabel()[1].GetValue()] = mt.GetCounter().GetValue()
	}
	// Labels sort by name: command, verb.
	if api["ADD/GET"] != 3 || api["ADD/PATCH"] != 3 || api["DEL/PATCH"] != 1 {
		t.Errorf("api requests: %v", api)
	}
	gauge := func(name string) float64 {
		fam := fams[name]
		if fam == nil || len(fam.GetMetric()) != 1 {
			t.Fatalf("%s missing", name)
		}
		return fam.GetMetric()[0].GetGauge().GetValue()
	}
	if gauge("kdd_cni_journal_pending") != 1 || gauge("kdd_cni_ipam_addresses_in_use") != 3 ||
		gauge("kdd_cni_ipam_addresses_capacity") != 253 || gauge("kdd_cni_token_expiry_timestamp_seconds") != 1900000000 {
		t.Error("gauges")
	}
	if v := fams["kdd_cni_metrics_records_skipped_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("skipped %v", v)
	}
}
