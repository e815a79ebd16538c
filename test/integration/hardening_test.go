package integration

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// squatterEnv makes the test binary a lock squatter (see squat).
const squatterEnv = "KDD_CNI_TEST_SQUATTER"

// squat is what an unprivileged process on the node (a hostNetwork pod)
// can do against a pod's lock: bind the abstract socket the lock used to be,
// and open + flock the lock file. It reports what it got, then holds on.
func squat(veth, lockFile string) {
	var got []string
	if l, err := net.Listen("unix", "@kdd-cni/lock/"+veth); err == nil {
		defer l.Close()
		got = append(got, "abstract socket bound")
	}
	if f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			got = append(got, "lock file locked")
		}
	} else {
		got = append(got, "lock file: "+err.Error())
	}
	os.Stdout.WriteString(strings.Join(got, "; ") + "\n")
	time.Sleep(time.Minute)
}

// TestLockCannotBeSquatted: an unprivileged process in the node's network
// namespace cannot take a pod's lock, so ADD and DEL proceed at once.
func TestLockCannotBeSquatted(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	p := e.newPod("squatted", false)
	dir, err := os.MkdirTemp("", "kddcni-squatter-") // reachable by uid 65534
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "squatter")
	copyFile(t, os.Args[0], bin)
	lockFile := filepath.Join(e.dataDir, "state", "locks", p.HostVeth)
	cmd := exec.Command(bin)
	cmd.Env = []string{squatterEnv + "=" + p.HostVeth + "," + lockFile}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.StartCmd(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line := make([]byte, 256)
	n, _ := io.ReadAtLeast(out, line, 1)
	t.Logf("squatter (uid 65534): %s", strings.TrimSpace(string(line[:n])))

	start := time.Now()
	e.add(p)
	e.del(p)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("ADD + DEL took %s with a squatter on the node", d)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestOwnNetnsRefused: CNI_NETNS naming the namespace the plugin runs in
// is refused (code 4) before anything changes; the node's uplink survives.
func TestOwnNetnsRefused(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	for _, netns := range []string{"/proc/self/ns/net", cluster.Node.Path} {
		for _, cmd := range []string{"ADD", "DEL", "CHECK"} {
			c := cniCall(e, &pod{Namespace: e.ns, Name: "p", ContainerID: "c1"}, cmd, e.conf(), "K8S_POD_NAMESPACE="+e.ns+";K8S_POD_NAME=p")
			c.Netns, c.IfName = netns, "uplink0"
			r := cluster.RunCNI(context.Background(), c)
			ce := cniErr(t, r)
			if ce.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(ce.Msg, "network namespace the plugin runs in") {
				t.Errorf("%s with CNI_NETNS=%s: %+v", cmd, netns, ce)
			}
		}
	}
	inNode(t, func() error {
		_, err := netlink.LinkByName("uplink0")
		return err
	})
}

// TestNamesCannotEscape: pod names, namespaces, container IDs and
// interface names that are not what Kubernetes and CNI allow are refused
// before any file is written; a relative state_dir is a config error.
func TestNamesCannotEscape(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	outside := t.TempDir()
	// The datastore is unreachable, so DEL would journal its clear.
	e.extra["kubernetes"] = map[string]any{"k8s_api_root": "https://127.0.0.1:1", "kubeconfig": kubeconfig}
	escape := "x/../../../../../../../../" + strings.TrimPrefix(outside, "/") + "/cron.d"
	for name, tc := range map[string]struct{ args, containerID, ifName string }{
		"namespace":    {"K8S_POD_NAMESPACE=" + escape + ";K8S_POD_NAME=p", "c1", "eth0"},
		"pod":          {"K8S_POD_NAMESPACE=" + e.ns + ";K8S_POD_NAME=../../../" + outside, "c1", "eth0"},
		"container ID": {"K8S_POD_NAMESPACE=" + e.ns + ";K8S_POD_NAME=p", "../../../../" + outside + "/x", "eth0"},
		"interface":    {"K8S_POD_NAMESPACE=" + e.ns + ";K8S_POD_NAME=p", "c1", "../x"},
	} {
		for _, cmd := range []string{"ADD", "DEL"} {
			p := e.sandbox("p")
			p.ContainerID = tc.containerID
			c := cniCall(e, p, cmd, e.conf(), tc.args)
			c.IfName = tc.ifName
			if r := cluster.RunCNI(context.Background(), c); r.Err == nil {
				t.Errorf("%s %s: accepted", name, cmd)
			}
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Errorf("files written outside state_dir: %v", entries)
	}
	e.extra["state_dir"] = "relative/state"
	r := e.call("ADD", e.newPod("rel", false), e.conf())
	if ce := cniErr(t, r); ce.Code != types.ErrInvalidNetworkConfig || !strings.Contains(ce.Msg, "state_dir") {
		t.Errorf("relative state_dir: %+v", ce)
	}
}

// TestStateDirMustBeRoots: a state_dir another user owns, or one anyone may
// write into, is refused before anything is done: a non-root user who could
// write there would publish the podCIDRs ADD allocates from, journal
// patches the plugin sends with its identity, or squat the pod locks. A
// podCIDR copy planted there is never used.
func TestStateDirMustBeRoots(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	state := e.stateDir()
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, _ = e.publishPodCIDRs() // a live watch lock, as a planted copy would need
	for name, spoil := range map[string]func() error{
		"world-writable": func() error { return os.Chmod(state, 0o777) },
		"another-users":  func() error { return os.Chown(state, 65534, 65534) },
		"group-writable": func() error { return os.Chmod(state, 0o770) },
	} {
		t.Run(name, func(t *testing.T) {
			if err := spoil(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chown(state, 0, 0); _ = os.Chmod(state, 0o700) })
			p := e.newPod("p-"+name, false)
			for _, cmd := range []string{"ADD", "DEL"} {
				r := e.call(cmd, p, e.conf())
				ce := cniErr(t, r)
				if ce.Code != types.ErrInvalidNetworkConfig || !strings.Contains(ce.Msg, "invalid state_dir") {
					t.Errorf("%s with a %s state_dir: code %d %q, want 7 naming the state_dir", cmd, name, ce.Code, ce.Msg)
				}
			}
			if linkExists(t, p.HostVeth) || len(e.leases()) != 0 {
				t.Errorf("a refused ADD left a link or leases: %v", e.leases())
			}
		})
	}
	// Root's and 0755 (a hostPath the kubelet made): tightened and used.
	if err := os.Chmod(state, 0o755); err != nil {
		t.Fatal(err)
	}
	p := e.newPod("fine", false)
	e.add(p)
	if st, _ := os.Stat(state); st.Mode().Perm() != 0o700 {
		t.Errorf("state_dir not tightened to 0700: %04o", st.Mode().Perm())
	}
	e.del(p)
}

// TestLogFileNeverFailsACommand: a log_file_path that cannot be created or
// opened (a parent that is a file, a directory at the path) fails no
// command: ADD networks the pod, CHECK passes, DEL tears it down, each
// logging to stderr after a warning that names the path.
func TestLogFileNeverFailsACommand(t *testing.T) {
	e := newEnv(t, podCIDRs("v4")...)
	blocker := filepath.Join(e.dataDir, "not-a-dir")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"parent is a file": filepath.Join(blocker, "cni.log"),
		"path is a dir":    e.dataDir,
	} {
		t.Run(name, func(t *testing.T) {
			e.logFile = path
			p := e.newPod("log-"+strings.ReplaceAll(name, " ", "-"), false)
			for _, cmd := range []string{"ADD", "CHECK", "DEL", "DEL"} {
				var r harness.CNIResult
				if cmd == "CHECK" {
					r = e.check(p)
				} else {
					r = e.call(cmd, p, e.conf())
				}
				if r.Err != nil {
					t.Fatalf("%s with log_file_path %s: %v: %s", cmd, path, r.Err, r.Stdout)
				}
				if !strings.Contains(string(r.Stderr), "cannot open the log file") || !strings.Contains(string(r.Stderr), path) {
					t.Errorf("%s: stderr does not say the log file could not be opened: %q", cmd, r.Stderr)
				}
				if cmd == "ADD" {
					p.Raw = r.Stdout
					if !linkExists(t, p.HostVeth) || len(e.leases()) != 1 {
						t.Errorf("ADD did not network the pod: link %v, leases %v", linkExists(t, p.HostVeth), e.leases())
					}
				}
			}
			if linkExists(t, p.HostVeth) || len(e.leases()) != 0 {
				t.Errorf("DEL left a link or leases: %v", e.leases())
			}
		})
	}
}
