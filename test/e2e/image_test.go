package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// Image is the name under which the agent image is imported.
const Image = "kdd-cni.local/agent:e2e"

// buildImage compiles the agent and packs it as an OCI image archive
// (oci-layout, index, manifest, config, one uncompressed layer), the format
// `ctr images import` takes. No registry and no Docker are involved.
func buildImage(dir string) (string, error) {
	bin := filepath.Join(dir, "agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./test/e2e/agent")
	build.Dir = harness.RepoRoot()
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build agent: %w: %s", err, out)
	}
	agent, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "agent-image.tar")
	return path, harness.Image{Name: Image, Entrypoint: []string{"/agent"}, Files: []harness.ImageFile{
		{Path: "/etc", Dir: true}, {Path: "/tmp", Dir: true}, {Path: "/agent", Mode: 0o755, Data: agent},
	}}.WriteArchive(path)
}

// Images of the two-node install: kdd-cni's (the image tree, as the
// Dockerfile builds it) under two tags for the rolling update, and a
// stand-in for calico/node that runs the pinned Felix alone.
const (
	kddImage   = "kdd-cni.local/kdd-cni:e2e"
	kddImage2  = "kdd-cni.local/kdd-cni:e2e-2"
	felixImage = "kdd-cni.local/felix:v3.31.0"
)

// installImages builds the archives of the two images the manifests run:
// kdd-cni's and the Felix stand-in for calico/node.
func installImages(t *testing.T, dir string) (kdd, felix string) {
	calico, err := harness.CalicoDir()
	if err != nil {
		t.Fatal(err)
	}
	if kdd, err = buildKddImage(dir, kddImage); err != nil {
		t.Fatal(err)
	}
	if felix, err = buildFelixImage(dir, calico); err != nil {
		t.Fatal(err)
	}
	return kdd, felix
}

// buildKddImage packs the image tree (make image-rootfs) as name.
func buildKddImage(dir, name string) (string, error) {
	files, err := harness.TreeFiles(rootfs)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(name)+".tar")
	return path, harness.Image{Name: name, Files: files, Entrypoint: []string{"/opt/cni/bin/install-cni"}}.WriteArchive(path)
}

// felixEntrypoint runs Felix as calico-node does with
// CALICO_NETWORKING_BACKEND=none, from the same environment.
const felixEntrypoint = `#!/bin/sh
export FELIX_FELIXHOSTNAME="${FELIX_FELIXHOSTNAME:-$NODENAME}"
export FELIX_DATASTORETYPE="${FELIX_DATASTORETYPE:-$DATASTORE_TYPE}"
export FELIX_LOGFILEPATH=none FELIX_LOGSEVERITYSYS=none
# The static (no cgo) Felix build skips a BPF clean-up it cannot do.
export FELIX_DebugSkipCTLBCleanup=true
exec /usr/bin/calico-felix
`

// netfilterFiles are the netfilter tools Felix and flanneld exec (iptables
// nft and legacy, ipset) with their libraries from this machine, iptables
// naming the nft variant as on this machine.
func netfilterFiles() ([]harness.ImageFile, error) {
	files, err := harness.HostFiles("/bin/sh", "/usr/sbin/xtables-nft-multi", "/usr/sbin/xtables-legacy-multi",
		"/usr/sbin/iptables-nft", "/usr/sbin/iptables-nft-save", "/usr/sbin/iptables-nft-restore",
		"/usr/sbin/ip6tables-nft", "/usr/sbin/ip6tables-nft-save", "/usr/sbin/ip6tables-nft-restore",
		"/usr/sbin/iptables-legacy", "/usr/sbin/iptables-legacy-save", "/usr/sbin/iptables-legacy-restore",
		"/usr/sbin/ip6tables-legacy", "/usr/sbin/ip6tables-legacy-save", "/usr/sbin/ip6tables-legacy-restore",
		"/usr/sbin/ipset", "/usr/lib/x86_64-linux-gnu/xtables",
		// ipset and iptables name protocols and ports ("10.0.0.1,tcp:80").
		"/etc/protocols", "/etc/services")
	if err != nil {
		return nil, err
	}
	for _, l := range []string{"iptables", "iptables-save", "iptables-restore"} {
		files = append(files, harness.ImageFile{Path: "/usr/sbin/" + l, Link: "iptables-nft" + strings.TrimPrefix(l, "iptables")})
		files = append(files, harness.ImageFile{Path: "/usr/sbin/ip6" + l, Link: "ip6tables-nft" + strings.TrimPrefix(l, "iptables")})
	}
	return files, nil
}

// buildFelixImage packs calico-felix with the netfilter tools it execs.
func buildFelixImage(dir, calico string) (string, error) {
	files, err := netfilterFiles()
	if err != nil {
		return "", err
	}
	felix, err := os.ReadFile(filepath.Join(calico, "calico-felix"))
	if err != nil {
		return "", err
	}
	files = append(files,
		harness.ImageFile{Path: "/usr/bin/calico-felix", Mode: 0o755, Data: felix},
		harness.ImageFile{Path: "/usr/local/bin/start-felix", Mode: 0o755, Data: []byte(felixEntrypoint)},
		harness.ImageFile{Path: "/tmp", Dir: true}, harness.ImageFile{Path: "/var/lib/calico", Dir: true},
		harness.ImageFile{Path: "/var/run/calico", Dir: true}, harness.ImageFile{Path: "/etc", Dir: true})
	path := filepath.Join(dir, "felix-image.tar")
	return path, harness.Image{Name: felixImage, Files: files, Entrypoint: []string{"/usr/local/bin/start-felix"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}.WriteArchive(path)
}
