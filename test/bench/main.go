// Command bench measures kdd-cni's `calico` plugin against Calico's own
// `calico` binary (built from the pinned Calico release) and the floor,
// ptp + host-local with no datastore, in the same run: interleaved, each
// executed exactly as a runtime does (fresh process, CNI env, config on
// stdin), the two datastore plugins against one real kube-apiserver:
// ADD/DEL latency serial, at 16 and 64 concurrent pods and in a 110-pod
// burst; API requests per command, by verb and resource, from the
// apiserver's audit log; peak RSS and CPU per invocation; binary size and
// start-up cost; where kdd-cni's ADD spends its time. It writes a Markdown
// summary, PNG plots and the raw samples.
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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kdd-cni/kdd-cni/internal/nodestate"
	"github.com/kdd-cni/kdd-cni/internal/podcidr"
	"github.com/kdd-cni/kdd-cni/test/harness"
)

const (
	namespace = "bench"
	node      = "bench-node"
	maxPods   = 128
)

// The three plugins, in the tables' order.
const (
	ours   = "kdd-cni"
	theirs = "calico"
	floor  = "ptp"
)

var pluginNames = []string{ours, theirs, floor}

type plugin struct {
	name   string
	binary string
	conf   []byte
	user   string // the API identity it runs as ("" for none)
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
	rssrun  string            // launcher used by the resource pass
	records nodestate.Records // kdd-cni's per-invocation records (its metrics store)
	mu      sync.Mutex
	// execStarts are when each serial invocation of kdd-cni was started,
	// to time its process start-up against its record.
	execStarts map[string][]time.Time
}

func main() {
	rounds := flag.Int("rounds", 10, "serial rounds (each ADDs then DELs 10 pods per plugin)")
	waves := flag.Int("waves", 4, "waves per concurrency level")
	out := flag.String("out", "results", "results directory")
	flag.StringVar(&logFile, "log", "", "write the plugin's debug log (with per-step timings) here")
	flag.BoolVar(&quick, "quick", false, "serial and resource passes only")
	flag.StringVar(&before, "before", "", "another build of kdd-cni's calico binary, run beside this one for a paired before/after figure")
	flag.BoolVar(&watched, "watched", true, "publish the node's podCIDRs as install-cni's sidecar does (false: kdd-cni reads the Node, as without the sidecar)")
	flag.Parse()
	if err := run(*rounds, *waves, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	logFile string
	quick   bool
	before  string
	watched bool
)

// beforeName is the -before build's name in the results.
const beforeName = "kdd-cni (before)"

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
	b := &bench{cp: suite.CP, bin: suite.BinDir, results: map[string]map[string]map[string][]sample{},
		execStarts: map[string][]time.Time{}}
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
	oursConf, _ := json.Marshal(map[string]any{
		"log_level": level, "log_file_path": logFile,
		"cniVersion": "1.0.0", "name": "bench-calico", "type": "calico", "nodename": node, "mtu": 1500,
		"datastore_type": "kubernetes", "state_dir": filepath.Join(work, "state"),
		"kubernetes": map[string]any{"kubeconfig": suite.Kubeconfig},
		"ipam":       map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": filepath.Join(work, "ours")},
		// The pod's annotations, as containerd and CRI-O pass them.
		"runtimeConfig": map[string]any{"io.kubernetes.cri.pod-annotations": map[string]string{}},
	})
	theirsConf, theirsBin, err := b.setUpCalico(ctx, work)
	if err != nil {
		return err
	}
	base, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": false, "mtu": 1500,
		"ipam": map[string]any{"type": "host-local", "subnet": "10.251.0.0/20", "dataDir": filepath.Join(work, "base")},
	})
	b.rssrun = filepath.Join(work, "rssrun")
	build := exec.Command("go", "build", "-o", b.rssrun, "./rssrun")
	build.Dir, build.Env = filepath.Join(harness.RepoRoot(), "test", "bench"), append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build rssrun: %w: %s", err, out)
	}
	b.plugins = []*plugin{
		{name: ours, binary: filepath.Join(b.bin, "calico"), conf: oursConf, user: harness.CNIUser},
		{name: theirs, binary: theirsBin, conf: theirsConf, user: harness.CalicoCNIUser},
		{name: floor, binary: filepath.Join(b.bin, "ptp"), conf: base},
	}
	b.records = nodestate.Dir(filepath.Join(work, "state")).Records()
	if before != "" {
		var c map[string]any
		_ = json.Unmarshal(oursConf, &c)
		c["state_dir"] = filepath.Join(work, "state-before")
		c["ipam"] = map[string]any{"type": "host-local", "subnet": "usePodCidr", "dataDir": filepath.Join(work, "before")}
		conf, _ := json.Marshal(c)
		b.plugins = append(b.plugins, &plugin{name: beforeName, binary: before, conf: conf, user: harness.CNIUser})
	}

	if watched {
		for _, dir := range []string{"state", "state-before"} {
			pub, err := publishPodCIDRs(ctx, b.cp, filepath.Join(work, dir))
			if err != nil {
				return err
			}
			defer pub.Close()
		}
	}

	fmt.Println("warming up")
	b.serial("warmup", 1, 4)
	delete(b.results, "warmup")

	fmt.Println("API requests")
	api := map[string]apiCost{}
	for _, p := range b.plugins {
		if p.name == beforeName {
			continue
		}
		if api[p.name], err = b.apiPass(p, 20); err != nil {
			return err
		}
	}

	fmt.Println("serial")
	_, _, _ = b.records.Drain() // the profile covers the serial pass only
	_, _, _ = b.records.Drain()
	b.serial("serial", rounds, 10)
	profile, err := b.profile()
	if err != nil {
		return err
	}
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
	summary := b.summary(api, startup, profile)
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

// order is the plugins rotated by r: each goes first in turn.
func (b *bench) order(r int) []*plugin {
	k := r % len(b.plugins)
	return append(append([]*plugin(nil), b.plugins[k:]...), b.plugins[:k]...)
}

// serial: each round, each plugin (each going first in turn) ADDs n pods
// one after another, then DELs them.
func (b *bench) serial(scenario string, rounds, n int) {
	for r := 0; r < rounds; r++ {
		for _, p := range b.order(r) {
			for _, cmd := range []string{"ADD", "DEL"} {
				for i := 0; i < n; i++ {
					if p.name == ours && scenario == "serial" {
						b.mu.Lock()
						b.execStarts[cmd] = append(b.execStarts[cmd], time.Now())
						b.mu.Unlock()
					}
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
	// The measurement floor: rssrun exec'ing a program that exits at once.
	f := b.run(&plugin{name: "exec-floor", binary: "/bin/true"}, "VERSION", 0, true)
	b.record(scenario, "exec-floor", "exec", f)
}

// apiPass ADDs then DELs n pods with p, serially, and reads from the
// apiserver's audit log every request p's identity made for each command,
// and the control plane's CPU time over the pass.
func (b *bench) apiPass(p *plugin, n int) (apiCost, error) {
	cost := apiCost{n: n, add: map[string]int{}, del: map[string]int{}}
	cpuBefore := b.controlPlaneCPU()
	for _, cmd := range []string{"ADD", "DEL"} {
		mark := b.cp.AuditMark()
		for i := 0; i < n; i++ {
			if s := b.invoke(p, cmd, i); s.Err != "" {
				return cost, fmt.Errorf("%s %s: %s", p.name, cmd, s.Err)
			}
		}
		if p.user == "" {
			continue
		}
		reqs, err := b.cp.AuditedSince(mark, p.user)
		if err != nil {
			return cost, err
		}
		into := cost.add
		if cmd == "DEL" {
			into = cost.del
		}
		for _, r := range reqs {
			into[r]++
		}
	}
	cost.cpu = (b.controlPlaneCPU() - cpuBefore) / time.Duration(n)
	return cost, nil
}

// concurrent: waves of c pods ADDed at once (released together), then DELed
// at once; each plugin goes first in turn.
func (b *bench) concurrent(scenario string, c, waves int) {
	for w := 0; w < waves; w++ {
		for _, p := range b.order(w) {
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

// publishPodCIDRs does for kdd-cni what install-cni's sidecar does on every
// node: it keeps the Node's podCIDRs in the plugin's state directory under
// the watch lock (nodestate.Publisher), so an ADD reads them from there. The
// bench's Node never changes, so one read stands for the watch.
func publishPodCIDRs(ctx context.Context, cp *harness.ControlPlane, stateDir string) (*nodestate.Publisher, error) {
	n, err := cp.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	cidrs, err := podcidr.ByFamily(node, n.Spec.PodCIDRs)
	if err != nil {
		return nil, err
	}
	pub, err := nodestate.NewPodCIDRPublisher(stateDir, node)
	if err != nil {
		return nil, err
	}
	if err := pub.Publish(podcidr.NodeCIDRs{Node: node, UID: string(n.UID), CIDRs: cidrs}); err != nil {
		pub.Close()
		return nil, err
	}
	return pub, nil
}
