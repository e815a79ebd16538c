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

// apiCost is one plugin's API work, per command, from the audit log.
type apiCost struct {
	add, del map[string]int // "VERB resource[/sub]" (or a URL) → requests over n commands
	n        int
	cpu      time.Duration // kube-apiserver + etcd CPU per ADD+DEL pair
}

// perCommand is the requests per command of cmd.
func (c apiCost) perCommand(cmd string) float64 {
	if c.n == 0 {
		return 0
	}
	t := 0
	for _, v := range c.of(cmd) {
		t += v
	}
	return float64(t) / float64(c.n)
}

// per is the requests of one kind per command.
func (c apiCost) per(cmd, key string) float64 {
	if c.n == 0 {
		return 0
	}
	return float64(c.of(cmd)[key]) / float64(c.n)
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

func (b *bench) summary(api map[string]apiCost, startup map[string]time.Duration, prof stepProfile) string {
	var w strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&w, "# kdd-cni benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "Machine: %s, %d CPUs, %s. kdd-cni = its `calico` (host-local usePodCidr); Calico's calico = Calico v3.31.0's "+
		"`calico` built from the pinned module (host-local usePodCidr, its policy-only netconf); both against one real kube-apiserver "+
		"on loopback, each as its own least-privilege identity. ptp = `ptp` + `host-local`, no datastore: the floor. All exec'd as a "+
		"runtime does, interleaved in one run, each going first in turn. Times in ms.\n\n", host, runtime.NumCPU(), runtime.Version())
	p50 := func(sc, name, cmd string) time.Duration { return percentile(latencies(b.results[sc][name][cmd]), 50) }
	fmt.Fprintf(&w, "| scenario | cmd | kdd-cni p50 | p99 | Calico p50 | p99 | ptp p50 | p99 | kdd-cni ÷ ptp | kdd-cni ÷ Calico | Calico ÷ ptp | errors (kdd-cni / Calico / ptp) |\n")
	fmt.Fprintf(&w, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, sc := range scenarios {
		if b.results[sc] == nil {
			continue // not run (-quick)
		}
		for _, cmd := range []string{"ADD", "DEL"} {
			fmt.Fprintf(&w, "| %s | %s |", sc, cmd)
			for _, name := range pluginNames {
				l := latencies(b.results[sc][name][cmd])
				fmt.Fprintf(&w, " %s | %s |", ms(percentile(l, 50)), ms(percentile(l, 99)))
			}
			fmt.Fprintf(&w, " %.2f× | %.2f× | %.2f× | %d / %d / %d |\n",
				ratio(p50(sc, ours, cmd), p50(sc, floor, cmd)), ratio(p50(sc, ours, cmd), p50(sc, theirs, cmd)),
				ratio(p50(sc, theirs, cmd), p50(sc, floor, cmd)),
				errs(b.results[sc][ours][cmd]), errs(b.results[sc][theirs][cmd]), errs(b.results[sc][floor][cmd]))
		}
	}
	b.pairedTable(&w)
	b.resourceTable(&w, api, startup)
	apiTable(&w, api)
	profileTable(&w, prof, startup, p50("serial", ours, "ADD"), p50("serial", floor, "ADD"))

	// Goals.
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	ran := func(sc string, verdict string) string {
		if b.results[sc] == nil {
			return "not run"
		}
		return verdict
	}
	serialRatio := ratio(p50("serial", ours, "ADD"), p50("serial", floor, "ADD"))
	c16Ratio := ratio(p50("concurrent-16", ours, "ADD"), p50("concurrent-16", floor, "ADD"))
	delRatio := ratio(p50("serial", ours, "DEL"), p50("serial", floor, "DEL"))
	addPer, delPer := api[ours].perCommand("ADD"), api[ours].perCommand("DEL")
	burstErrs := errs(b.results["burst-110"][ours]["ADD"]) + errs(b.results["burst-110"][ours]["DEL"])
	fmt.Fprintf(&w, "\n| goal | figure | |\n|---|---|---|\n")
	fmt.Fprintf(&w, "| ADD p50 ≤ 1.0× ptp, serial | %.2f× | %s |\n", serialRatio, check(serialRatio <= 1.0))
	fmt.Fprintf(&w, "| ADD p50 ≤ 1.2× ptp, 16 concurrent | %.2f× | %s |\n", c16Ratio, ran("concurrent-16", check(c16Ratio <= 1.2)))
	fmt.Fprintf(&w, "| DEL p50 ≤ 1.0× ptp, serial | %.2f× | %s |\n", delRatio, check(delRatio <= 1.0))
	fmt.Fprintf(&w, "| 1 API request per ADD, 1 per DEL | %.2f / %.2f | %s |\n", addPer, delPer, check(addPer <= 1 && delPer <= 1))
	fmt.Fprintf(&w, "| burst of 110 pods, zero errors | %d errors | %s |\n", burstErrs, ran("burst-110", check(burstErrs == 0)))
	return w.String()
}

// pairedTable: this build of kdd-cni beside the -before build, in the same
// interleaved rounds.
func (b *bench) pairedTable(w *strings.Builder) {
	if b.results["serial"][beforeName] == nil {
		return
	}
	fmt.Fprintf(w, "\n| paired, same run | cmd | this build p50 | p99 | before p50 | p99 | this ÷ before (p50) |\n|---|---|---|---|---|---|---|\n")
	for _, sc := range scenarios {
		for _, cmd := range []string{"ADD", "DEL"} {
			now, was := latencies(b.results[sc][ours][cmd]), latencies(b.results[sc][beforeName][cmd])
			if len(now) == 0 || len(was) == 0 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %.2f× |\n", sc, cmd, ms(percentile(now, 50)), ms(percentile(now, 99)),
				ms(percentile(was, 50)), ms(percentile(was, 99)), ratio(percentile(now, 50), percentile(was, 50)))
		}
	}
}

// resourceTable: peak RSS and CPU per invocation, start-up, control-plane
// CPU and binary sizes, for the three.
func (b *bench) resourceTable(w *strings.Builder, api map[string]apiCost, startup map[string]time.Duration) {
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
	var execFloor int64
	if f := b.results["resources"]["exec-floor"]["exec"]; len(f) > 0 {
		execFloor = f[0].MaxRSS
	}
	mb := func(kb int64) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }
	row := func(what string, cell func(name string) string) {
		fmt.Fprintf(w, "| %s |", what)
		for _, name := range pluginNames {
			fmt.Fprintf(w, " %s |", cell(name))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\n| per invocation (resource pass: serial ADD+DEL, started through rssrun) | kdd-cni | Calico | ptp |\n|---|---|---|---|\n")
	row("peak RSS, median (MB; the largest of the plugin and the host-local it ran)", func(n string) string { return mb(median64(rss[n])) })
	row(fmt.Sprintf("peak RSS, max (MB; measurement floor %s MB)", mb(execFloor)), func(n string) string { return mb(max64(rss[n])) })
	row("CPU time per ADD, median (ms, user+sys, incl. host-local)", func(n string) string { return ms(percentile(cpu[n], 50)) })
	row("start-up: exec of VERSION, median (ms)", func(n string) string { return ms(startup[n]) })
	row("kube-apiserver + etcd CPU per ADD+DEL pair (ms; same cores, incl. their background work)", func(n string) string { return ms(api[n].cpu) })
	row("binary size (MB)", func(n string) string {
		for _, p := range b.plugins {
			if p.name == n {
				if fi, err := os.Stat(p.binary); err == nil {
					return fmt.Sprintf("%.1f", float64(fi.Size())/(1<<20))
				}
			}
		}
		return "?"
	})
}

// apiTable: every request each identity made per ADD and per DEL, by verb
// and resource, as the apiserver audited them.
func apiTable(w *strings.Builder, api map[string]apiCost) {
	fmt.Fprintf(w, "\n| API requests (audit log, serial) | kdd-cni | Calico | ptp |\n|---|---|---|---|\n")
	for _, cmd := range []string{"ADD", "DEL"} {
		keys := map[string]bool{}
		for _, c := range api {
			for k := range c.of(cmd) {
				keys[k] = true
			}
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		fmt.Fprintf(w, "| **per %s, total** | **%.2f** | **%.2f** | **%.2f** |\n", cmd,
			api[ours].perCommand(cmd), api[theirs].perCommand(cmd), api[floor].perCommand(cmd))
		for _, k := range sorted {
			fmt.Fprintf(w, "| %s `%s` | %.2f | %.2f | %.2f |\n", cmd, k, api[ours].per(cmd, k), api[theirs].per(cmd, k), api[floor].per(cmd, k))
		}
	}
	if n := api[ours].n; n > 0 {
		fmt.Fprintf(w, "\nEach over %d serial ADDs and then %d DELs per plugin.\n", n, n)
	}
}

func (c apiCost) of(cmd string) map[string]int {
	if cmd == "DEL" {
		return c.del
	}
	return c.add
}

// profileTable: where a serial ADD's time goes, kdd-cni beside ptp.
func profileTable(w *strings.Builder, p stepProfile, startup map[string]time.Duration, oursP50, ptpP50 time.Duration) {
	fmt.Fprintf(w, "\n| where a serial ADD's time goes (medians, ms; %d kdd-cni ADDs from its own records) | kdd-cni | ptp |\n|---|---|---|\n", p.n)
	for _, r := range profileRows {
		if _, ok := p.ours[r.key]; !ok {
			continue // a step this configuration does not take (the GET, with the sidecar's podCIDRs)
		}
		theirs := "–"
		switch r.key {
		case "start-up":
			theirs = ms(startup[floor]) + " (VERSION exec)"
		case "host-local":
			theirs = ms(p.ptp["host-local"]) + " (exec'd alone)"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", r.what, ms(p.ours[r.key]), theirs)
	}
	fmt.Fprintf(w, "| exec → exit, p50 (the latency above) | %s | %s |\n", ms(oursP50), ms(ptpP50))
	if len(p.at) == 0 {
		return // records of a build that keeps no timeline
	}
	fmt.Fprintf(w, "\n| a serial ADD's timeline (medians of each event, ms after the configuration was read; start-up %s before it) | kdd-cni |\n|---|---|\n", ms(p.ours["start-up"]))
	for _, r := range timelineRows {
		d, ok := p.at[r.key]
		if r.key == "total" {
			d, ok = p.ours["total"], true
		}
		if ok {
			fmt.Fprintf(w, "| %s | %s |\n", r.what, ms(d))
		}
	}
}

func median64(v []int64) int64 {
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func max64(v []int64) int64 {
	var m int64
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// plot draws box plots of the latency distribution per scenario.
func (b *bench) plot(cmd, path string) error {
	p := plot.New()
	p.Title.Text = "CNI " + cmd + " latency (ms): kdd-cni (white), Calico's calico (dark), ptp + host-local (light)"
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	fills := map[string]color.Color{theirs: color.Gray{Y: 110}, floor: color.Gray{Y: 200}}
	var names []string
	x := 0.0
	for _, sc := range scenarios {
		for i, name := range pluginNames {
			var vals plotter.Values
			for _, d := range latencies(b.results[sc][name][cmd]) {
				vals = append(vals, float64(d.Microseconds())/1000)
			}
			if len(vals) == 0 {
				continue
			}
			box, err := plotter.NewBoxPlot(vg.Points(16), x, vals)
			if err != nil {
				return err
			}
			if c, ok := fills[name]; ok {
				box.FillColor = c
			}
			p.Add(box)
			label := ""
			if i == 1 {
				label = sc
			}
			names = append(names, label)
			x++
		}
	}
	p.NominalX(names...)
	return p.Save(13*vg.Inch, 5*vg.Inch, path)
}
