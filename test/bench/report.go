package main

import (
	"fmt"
	"image/color"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

type apiCost struct {
	add, del map[string]float64
	n        int
	cpu      time.Duration // kube-apiserver + etcd CPU per ADD+DEL pair
}

var scenarios = []string{"serial", "concurrent-16", "concurrent-64", "burst-110"}

func latencies(ss []sample) []time.Duration {
	var ds []time.Duration
	for _, s := range ss {
		if s.Err == "" {
			ds = append(ds, s.Latency)
		}
	}
	return ds
}

func errs(ss []sample) int {
	n := 0
	for _, s := range ss {
		if s.Err != "" {
			n++
		}
	}
	return n
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

func (b *bench) summary(api apiCost, startup map[string]time.Duration) string {
	var w strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&w, "# kdd-cni benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "Machine: %s, %d CPUs, %s. kdd-cni = `calico` (host-local usePodCidr, real kube-apiserver on loopback); "+
		"baseline = `ptp` + `host-local` (no datastore). Both exec'd as a runtime does, interleaved in one run. Times in ms.\n\n",
		host, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&w, "| scenario | cmd | kdd-cni p50 | p90 | p99 | baseline p50 | p90 | p99 | p50 ratio | p99 ratio | errors (kdd-cni / baseline) |\n")
	fmt.Fprintf(&w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range scenarios {
		for _, cmd := range []string{"ADD", "DEL"} {
			o, bl := b.results[sc]["kdd-cni"][cmd], b.results[sc]["baseline"][cmd]
			lo, lb := latencies(o), latencies(bl)
			fmt.Fprintf(&w, "| %s | %s | %s | %s | %s | %s | %s | %s | %.2f× | %.2f× | %d / %d |\n", sc, cmd,
				ms(percentile(lo, 50)), ms(percentile(lo, 90)), ms(percentile(lo, 99)),
				ms(percentile(lb, 50)), ms(percentile(lb, 90)), ms(percentile(lb, 99)),
				ratio(percentile(lo, 50), percentile(lb, 50)), ratio(percentile(lo, 99), percentile(lb, 99)), errs(o), errs(bl))
		}
	}
	// Resources.
	rss := map[string][]int64{}
	cpu := map[string][]time.Duration{}
	for name, cmds := range b.results["resources"] {
		for _, s := range append(cmds["ADD"], cmds["DEL"]...) {
			rss[name] = append(rss[name], s.MaxRSS)
		}
		for _, s := range cmds["ADD"] {
			cpu[name] = append(cpu[name], s.CPU)
		}
	}
	var floor int64
	if f := b.results["resources"]["floor"]["exec"]; len(f) > 0 {
		floor = f[0].MaxRSS
	}
	maxOf := func(v []int64) int64 {
		var m int64
		for _, x := range v {
			m = max(m, x)
		}
		return m
	}
	medianRSS := func(v []int64) int64 {
		s := append([]int64(nil), v...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		if len(s) == 0 {
			return 0
		}
		return s[len(s)/2]
	}
	fmt.Fprintf(&w, "\n| per invocation (resource pass: serial ADD+DEL, started through rssrun) | kdd-cni | baseline |\n|---|---|---|\n")
	fmt.Fprintf(&w, "| peak RSS, median (MB; the largest of the plugin and the host-local it ran) | %.1f | %.1f |\n", float64(medianRSS(rss["kdd-cni"]))/1024, float64(medianRSS(rss["baseline"]))/1024)
	fmt.Fprintf(&w, "| peak RSS, max (MB; measurement floor %.1f MB) | %.1f | %.1f |\n", float64(floor)/1024, float64(maxOf(rss["kdd-cni"]))/1024, float64(maxOf(rss["baseline"]))/1024)
	fmt.Fprintf(&w, "| CPU time per ADD, median (ms, user+sys, incl. host-local) | %s | %s |\n", ms(percentile(cpu["kdd-cni"], 50)), ms(percentile(cpu["baseline"], 50)))
	fmt.Fprintf(&w, "| start-up: exec of VERSION, median (ms) | %s | %s |\n", ms(startup["kdd-cni"]), ms(startup["baseline"]))
	fmt.Fprintf(&w, "| kube-apiserver + etcd CPU per ADD+DEL pair (ms; same cores) | %s | 0 |\n", ms(api.cpu))
	size := func(name string) string {
		fi, err := os.Stat(b.bin + "/" + name)
		if err != nil {
			return "?"
		}
		return fmt.Sprintf("%.1f", float64(fi.Size())/(1<<20))
	}
	fmt.Fprintf(&w, "| binary size (MB) | calico %s | ptp %s, host-local %s |\n", size("calico"), size("ptp"), size("host-local"))
	addPer, delPer := total(api.add)/float64(api.n), total(api.del)/float64(api.n)
	fmt.Fprintf(&w, "\nAPI requests (apiserver_request_total, %d serial ADDs then DELs): %.2f per ADD %v, %.2f per DEL %v. Calico's binary: 6 per ADD (8 with discovery), 3 per DEL.\n",
		api.n, addPer, api.add, delPer, api.del)

	// Goals.
	p50 := func(sc, name string) time.Duration { return percentile(latencies(b.results[sc][name]["ADD"]), 50) }
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	serialRatio := ratio(p50("serial", "kdd-cni"), p50("serial", "baseline"))
	c16Ratio := ratio(p50("concurrent-16", "kdd-cni"), p50("concurrent-16", "baseline"))
	c64 := latencies(b.results["concurrent-64"]["kdd-cni"]["ADD"])
	tail := ratio(percentile(c64, 99), percentile(c64, 50))
	burstErrs := errs(b.results["burst-110"]["kdd-cni"]["ADD"]) + errs(b.results["burst-110"]["kdd-cni"]["DEL"])
	peak := float64(maxOf(rss["kdd-cni"])) / 1024
	fmt.Fprintf(&w, "\n| goal | figure | |\n|---|---|---|\n")
	fmt.Fprintf(&w, "| ADD p50 ≤ 1.3× baseline, serial | %.2f× | %s |\n", serialRatio, check(serialRatio <= 1.3))
	fmt.Fprintf(&w, "| ADD p50 ≤ 1.3× baseline, 16 concurrent | %.2f× | %s |\n", c16Ratio, check(c16Ratio <= 1.3))
	fmt.Fprintf(&w, "| ADD p99 ≤ 2× p50 at 64 concurrent | %.2f× | %s |\n", tail, check(tail <= 2))
	fmt.Fprintf(&w, "| ≤ 2 API requests per ADD, 1 per DEL | %.2f / %.2f | %s |\n", addPer, delPer, check(addPer <= 2 && delPer <= 1))
	fmt.Fprintf(&w, "| peak RSS ≤ 30 MB per invocation | %.1f MB | %s |\n", peak, check(peak <= 30))
	fmt.Fprintf(&w, "| burst of 110 pods, zero errors | %d errors | %s |\n", burstErrs, check(burstErrs == 0))
	return w.String()
}

// plot draws box plots of the latency distribution per scenario.
func (b *bench) plot(cmd, path string) error {
	p := plot.New()
	p.Title.Text = "CNI " + cmd + " latency (ms): kdd-cni (left) vs ptp + host-local (right)"
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var names []string
	x := 0.0
	for _, sc := range scenarios {
		for i, name := range []string{"kdd-cni", "baseline"} {
			var vals plotter.Values
			for _, d := range latencies(b.results[sc][name][cmd]) {
				vals = append(vals, float64(d.Microseconds())/1000)
			}
			if len(vals) == 0 {
				continue
			}
			box, err := plotter.NewBoxPlot(vg.Points(18), x, vals)
			if err != nil {
				return err
			}
			if i == 1 {
				box.FillColor = color.Gray{Y: 190}
			}
			p.Add(box)
			label := sc
			if i == 1 {
				label = ""
			}
			names = append(names, label)
			x++
		}
	}
	p.NominalX(names...)
	return p.Save(11*vg.Inch, 5*vg.Inch, path)
}
