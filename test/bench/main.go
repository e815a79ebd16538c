// Command bench measures kdd-cni's `calico` plugin against a baseline
// (ptp + host-local, no datastore) in the same run, executed exactly as a
// runtime does (fresh process, CNI env, config on stdin), against a real
// kube-apiserver: ADD/DEL latency serial, at 16 and 64 concurrent pods and
// in a 110-pod burst; API requests per command from the apiserver's own
// metrics; peak RSS and CPU per invocation; binary size and start-up cost.
// It writes a Markdown summary, a PNG plot and the raw samples.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

const (
	namespace = "bench"
	node      = "bench-node"
	maxPods   = 128
)

type plugin struct {
	name   string
	binary string
	conf   []byte
}

// sample is one invocation.
type sample struct {
	Latency time.Duration
	MaxRSS  int64         // KB, the process and the children it waited for
	CPU     time.Duration // user + system
	Err     string
}

type bench struct {
	cp      *harness.ControlPlane
	bin     string
	netns   []*harness.NetNS
	plugins []*plugin
	// results[scenario][plugin][command]
	results map[string]map[string]map[string][]sample
	rssrun  string // launcher used by the resource pass
	mu      sync.Mutex
	apiMark map[string]float64 // request counters between serialOurs' ADDs and DELs
}

func main() {
	rounds := flag.Int("rounds", 10, "serial rounds (each ADDs then DELs 10 pods per plugin)")
	waves := flag.Int("waves", 4, "waves per concurrency level")
	out := flag.String("out", "results", "results directory")
	flag.StringVar(&logFile, "log", "", "write the plugin's debug log (with per-step timings) here")
	flag.BoolVar(&quick, "quick", false, "serial and resource passes only")
	flag.Parse()
	if err := run(*rounds, *waves, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	logFile string
	quick   bool
)

func run(rounds, waves int, outDir string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	ctx := context.Background()
	suite, err := harness.StartSuite(ctx, harness.Options{})
	if err != nil {
		return err
	}
	defer suite.Stop()
	b := &bench{cp: suite.CP, bin: suite.BinDir, results: map[string]map[string]map[string][]sample{}}
	defer b.cleanup()
	if _, err := b.cp.CreateNode(ctx, node, "10.250.0.0/20"); err != nil {
		return err
	}
	for i := 0; i < maxPods; i++ {
		if _, err := b.cp.CreatePod(ctx, namespace, fmt.Sprintf("pod-%d", i), node); err != nil {
			return err
		}
		ns, err := harness.NewNetNS("bench")
		if err != nil {
			return err
		}
		b.netns = append(b.netns, ns)
	}
	work, err := os.MkdirTemp("", "kdd-cni-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	level := "info"
	if logFile != "" {
		level = "debug"
	}
	ours, _ := json.Marshal(map[string]any{
		"log_level": level, "log_file_path": logFile,
		"cniVersion": "1.1.0", "name": "bench-calico", "type": "calico", "nodename": node, "mtu": 1500,
		"datastore_type": "kubernetes", "state_dir": filepath.Join(work, "state"),
		"kubernetes": map[string]any{"kubeconfig": suite.Kubeconfig},
		"ipam":       map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": filepath.Join(work, "ours")},
		// The pod's annotations, as containerd and CRI-O pass them.
		"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{}},
	})
	base, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": 1500,
		"ipam": map[string]any{"type": "host-local", "subnet": "10.251.0.0/20", "dataDir": filepath.Join(work, "base")},
	})
	b.rssrun = filepath.Join(work, "rssrun")
	build := exec.Command("go", "build", "-o", b.rssrun, "./rssrun")
	build.Dir, build.Env = filepath.Join(harness.RepoRoot(), "test", "bench"), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build rssrun: %w: %s", err, out)
	}
	b.plugins = []*plugin{
		{name: "kdd-cni", binary: filepath.Join(b.bin, "calico"), conf: ours},
		{name: "baseline", binary: filepath.Join(b.bin, "ptp"), conf: base},
	}

	fmt.Println("warming up")
	b.serial("warmup", 1, 4)
	delete(b.results, "warmup")

	apiBefore, err := b.cp.RequestCounts(ctx)
	if err != nil {
		return err
	}
	cpuBefore := b.controlPlaneCPU()
	b.serialOurs("api", 20)
	cpCPU := (b.controlPlaneCPU() - cpuBefore) / 20
	apiAfterAdd := b.apiMark
	apiAfter, err := b.cp.RequestCounts(ctx)
	if err != nil {
		return err
	}
	api := apiCost{
		add: harness.CountDelta(apiBefore, apiAfterAdd, "pods", "nodes", "namespaces"),
		del: harness.CountDelta(apiAfterAdd, apiAfter, "pods", "nodes", "namespaces"),
		n:   20, cpu: cpCPU,
	}
	delete(b.results, "api")

	fmt.Println("serial")
	b.serial("serial", rounds, 10)
	if !quick {
		for _, c := range []int{16, 64} {
			fmt.Printf("%d concurrent\n", c)
			b.concurrent(fmt.Sprintf("concurrent-%d", c), c, waves)
		}
		fmt.Println("burst of 110")
		b.concurrent("burst-110", 110, 2)
	}
	fmt.Println("resources")
	b.resources("resources", 3, 10)
	startup := b.startup(40)

	stamp := time.Now().UTC().Format("20060102-150405")
	dir := filepath.Join(outDir, stamp)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	summary := b.summary(api, startup)
	fmt.Print(summary)
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(summary), 0o644); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(b.results, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "samples.json"), raw, 0o644); err != nil {
		return err
	}
	for _, cmd := range []string{"ADD", "DEL"} {
		if err := b.plot(cmd, filepath.Join(dir, "latency-"+strings.ToLower(cmd)+".png")); err != nil {
			return err
		}
	}
	latest := filepath.Join(outDir, "latest")
	_ = os.Remove(latest)
	_ = os.Symlink(stamp, latest)
	fmt.Printf("\nwritten to %s (and %s)\n", dir, latest)
	return nil
}

// controlPlaneCPU is the CPU time kube-apiserver and etcd have used so far.
func (b *bench) controlPlaneCPU() time.Duration {
	var total time.Duration
	for name, pid := range b.cp.PIDs() {
		if name != "kube-apiserver" && name != "etcd" {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name: utime and stime are the 12th and 13th.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		var ut, st int64
		fmt.Sscan(f[11], &ut)
		fmt.Sscan(f[12], &st)
		total += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
	}
	return total
}

func (b *bench) cleanup() {
	for _, ns := range b.netns {
		_ = ns.Close()
	}
}

// invoke runs one command as a runtime does.
func (b *bench) invoke(p *plugin, cmd string, pod int) sample { return b.run(p, cmd, pod, false) }

// run execs the plugin; through rssrun, the rusage is the plugin's own.
func (b *bench) run(p *plugin, cmd string, pod int, viaLauncher bool) sample {
	c := exec.Command(p.binary)
	if viaLauncher {
		c = exec.Command(b.rssrun, p.binary)
	}
	c.Env = append(os.Environ(), "CNI_COMMAND="+cmd, fmt.Sprintf("CNI_CONTAINERID=bench-%d", pod),
		"CNI_NETNS="+b.netns[pod].Path, "CNI_IFNAME=eth0", "CNI_PATH="+b.bin,
		fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=pod-%d;K8S_POD_UID=u", namespace, pod))
	c.Stdin = bytes.NewReader(p.conf)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	var report *os.File
	if viaLauncher {
		r, w, err := os.Pipe()
		if err != nil {
			return sample{Err: err.Error()}
		}
		defer r.Close()
		c.ExtraFiles = []*os.File{w}
		report = r
		defer w.Close()
	}
	start := time.Now()
	err := b.cp.Run(c)
	s := sample{Latency: time.Since(start)}
	if report != nil {
		c.ExtraFiles[0].Close()
		var ru struct {
			MaxRSS int64 `json:"maxrss_kb"`
			CPU    int64 `json:"cpu_ns"`
		}
		if jerr := json.NewDecoder(report).Decode(&ru); jerr == nil {
			s.MaxRSS, s.CPU = ru.MaxRSS, time.Duration(ru.CPU)
		}
	} else if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		s.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err != nil {
		s.Err = fmt.Sprintf("%v: %s", err, strings.TrimSpace(out.String()))
	}
	return s
}

func (b *bench) record(scenario, plugin, cmd string, s sample) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.results[scenario] == nil {
		b.results[scenario] = map[string]map[string][]sample{}
	}
	if b.results[scenario][plugin] == nil {
		b.results[scenario][plugin] = map[string][]sample{}
	}
	b.results[scenario][plugin][cmd] = append(b.results[scenario][plugin][cmd], s)
}

// serial: each round, each plugin (alternating who goes first) ADDs n pods
// one after another, then DELs them.
func (b *bench) serial(scenario string, rounds, n int) {
	for r := 0; r < rounds; r++ {
		order := b.plugins
		if r%2 == 1 {
			order = []*plugin{b.plugins[1], b.plugins[0]}
		}
		for _, p := range order {
			for _, cmd := range []string{"ADD", "DEL"} {
				for i := 0; i < n; i++ {
					b.record(scenario, p.name, cmd, b.invoke(p, cmd, i))
				}
			}
		}
	}
}

// resources is a serial pass through rssrun for peak RSS and CPU time.
func (b *bench) resources(scenario string, rounds, n int) {
	for r := 0; r < rounds; r++ {
		for _, p := range b.plugins {
			for _, cmd := range []string{"ADD", "DEL"} {
				for i := 0; i < n; i++ {
					b.record(scenario, p.name, cmd, b.run(p, cmd, i, true))
				}
			}
		}
	}
	// The floor: rssrun exec'ing a program that exits at once.
	floor := b.run(&plugin{name: "floor", binary: "/bin/true"}, "VERSION", 0, true)
	b.record(scenario, "floor", "exec", floor)
}

// serialOurs ADDs then DELs n pods with kdd-cni, marking the request
// counters in between, to attribute API requests to each command.
func (b *bench) serialOurs(scenario string, n int) {
	p := b.plugins[0]
	for i := 0; i < n; i++ {
		b.record(scenario, p.name, "ADD", b.invoke(p, "ADD", i))
	}
	b.apiMark, _ = b.cp.RequestCounts(context.Background())
	for i := 0; i < n; i++ {
		b.record(scenario, p.name, "DEL", b.invoke(p, "DEL", i))
	}
}

// concurrent: waves of c pods ADDed at once (released together), then DELed
// at once; plugins alternate wave by wave.
func (b *bench) concurrent(scenario string, c, waves int) {
	for w := 0; w < waves; w++ {
		order := b.plugins
		if w%2 == 1 {
			order = []*plugin{b.plugins[1], b.plugins[0]}
		}
		for _, p := range order {
			for _, cmd := range []string{"ADD", "DEL"} {
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := 0; i < c; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						<-start
						b.record(scenario, p.name, cmd, b.invoke(p, cmd, i))
					}(i)
				}
				close(start)
				wg.Wait()
			}
		}
	}
}

// startup: exec cost of the binary doing nothing (calico -v vs ptp VERSION).
func (b *bench) startup(n int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, p := range b.plugins {
		var ds []time.Duration
		for i := 0; i < n; i++ {
			c := exec.Command(p.binary)
			c.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
			c.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
			start := time.Now()
			_ = c.Run()
			ds = append(ds, time.Since(start))
		}
		out[p.name] = percentile(ds, 50)
	}
	return out
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(p/100*float64(len(s)-1) + 0.5)
	return s[idx]
}
