package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

// The images Kubernetes' e2e specs run, under the names the framework
// resolves (pull policy IfNotPresent: never pulled, imported into each
// node's containerd), built here from the pinned modules and this
// machine's Debian packages (make deps installs them).
const (
	agnhostImage    = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	agnhost245Image = "registry.k8s.io/e2e-test-images/agnhost:2.45" // the network-policy-api suite's
	glibcDNSImage   = "registry.k8s.io/e2e-test-images/glibc-dns-testing:2.1.1"
	busyboxImage    = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	nginxImage      = "registry.k8s.io/e2e-test-images/nginx:1.27.0-2"
	pauseImage      = "registry.k8s.io/pause:3.10.2"
	corednsImage    = "kdd-cni.local/coredns:e2e"
	imagePATH       = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	busyboxHostPath = "/usr/bin/busybox"
)

// shellTools are the host files of the specs' shell tools (the upstream
// agnhost image's Alpine packages, from Debian: bind9-dnsutils, curl,
// netcat-openbsd, iproute2, bash; glibc's getent as glibc-dns-testing has).
var shellTools = []string{"/bin/sh", "/bin/bash", "/usr/bin/curl", "/usr/bin/dig", "/usr/bin/nslookup",
	"/usr/bin/host", "/usr/bin/nc.openbsd", "/usr/bin/getent", "/usr/sbin/ip", busyboxHostPath,
	"/etc/protocols", "/etc/services"}

// toolsFiles is a glibc userland for the specs' shell commands: the tools
// above with their libraries, busybox's applets for the coreutils the
// commands use (sleep, seq, cat, test, …), and the /etc files they read.
func toolsFiles() ([]harness.ImageFile, error) {
	files, err := harness.HostFiles(shellTools...)
	if err != nil {
		return nil, fmt.Errorf("collect the shell tools (make deps installs them): %w", err)
	}
	have := map[string]bool{}
	for _, f := range files {
		have[f.Path] = true
	}
	files = append(files, harness.ImageFile{Path: "/usr/bin/nc", Link: "nc.openbsd"})
	have["/usr/bin/nc"] = true
	out, err := exec.Command(busyboxHostPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox's applets: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		p := "/bin/" + applet
		if have[p] || have["/usr/bin/"+applet] || have["/usr/sbin/"+applet] || applet == "busybox" {
			continue
		}
		files = append(files, harness.ImageFile{Path: p, Link: busyboxHostPath})
	}
	return append(files,
		harness.ImageFile{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		harness.ImageFile{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home:/bin/sh\n")},
		harness.ImageFile{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\ngroup-defined-in-image:x:50000:user-defined-in-image\n")},
		harness.ImageFile{Path: "/tmp", Dir: true}, harness.ImageFile{Path: "/root", Dir: true},
	), nil
}

// testImages writes the archives of the images named (all the
// sig-network specs' with none): agnhost (all subcommands, porter's TLS
// pair, the shell tools), the glibc-dns-testing and busybox images,
// stand-ins for nginx (busybox httpd) and pause (the agent, which pauses
// without arguments), and CoreDNS.
func testImages(dir, tools string, names ...string) ([]string, error) {
	var archives []string
	for _, b := range []struct {
		name  string
		build func() (harness.Image, error)
	}{
		{agnhostImage, func() (harness.Image, error) { return agnhostImageOf(tools, agnhostImage) }},
		{agnhost245Image, func() (harness.Image, error) { return agnhostImageOf(tools, agnhost245Image) }},
		{glibcDNSImage, func() (harness.Image, error) { return toolsImage(glibcDNSImage) }},
		{busyboxImage, func() (harness.Image, error) { return toolsImage(busyboxImage) }},
		{nginxImage, func() (harness.Image, error) {
			im, err := toolsImage(nginxImage)
			im.Files = append(im.Files, harness.ImageFile{Path: "/www", Dir: true})
			im.Entrypoint, im.Cmd = []string{"/bin/httpd", "-f", "-p", "80", "-h", "/www"}, nil
			return im, err
		}},
		{pauseImage, func() (harness.Image, error) {
			agent, err := os.ReadFile(filepath.Join(filepath.Dir(image), "agent"))
			return harness.Image{Name: pauseImage, Files: []harness.ImageFile{{Path: "/pause", Mode: 0o755, Data: agent}},
				Entrypoint: []string{"/pause"}}, err
		}},
		{corednsImage, func() (harness.Image, error) {
			coredns, err := os.ReadFile(filepath.Join(tools, "coredns"))
			return harness.Image{Name: corednsImage, Files: []harness.ImageFile{{Path: "/coredns", Mode: 0o755, Data: coredns},
				{Path: "/etc/coredns", Dir: true}, {Path: "/tmp", Dir: true}}, Entrypoint: []string{"/coredns"}}, err
		}},
	} {
		if len(names) > 0 && !slices.Contains(names, b.name) || len(names) == 0 && b.name == agnhost245Image {
			continue
		}
		im, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("build image %s: %w", b.name, err)
		}
		path := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(im.Name)+".tar")
		if err := im.WriteArchive(path); err != nil {
			return nil, fmt.Errorf("write image %s: %w", im.Name, err)
		}
		archives = append(archives, path)
	}
	return archives, nil
}

// toolsImage is the glibc userland alone (a shell by default).
func toolsImage(name string) (harness.Image, error) {
	files, err := toolsFiles()
	return harness.Image{Name: name, Files: files, Cmd: []string{"/bin/sh"}, Env: []string{imagePATH}}, err
}

// agnhostImageOf is agnhost over the userland, as upstream builds it: the
// program at /agnhost (and /agnhost-2), porter's TLS pair, /uploads, and
// `pause` by default.
func agnhostImageOf(tools, name string) (harness.Image, error) {
	im, err := toolsImage(name)
	if err != nil {
		return im, err
	}
	agnhost, err := os.ReadFile(filepath.Join(tools, "agnhost"))
	if err != nil {
		return im, err
	}
	k8s, err := kubernetesModuleDir()
	if err != nil {
		return im, err
	}
	im.Files = append(im.Files, harness.ImageFile{Path: "/agnhost", Mode: 0o755, Data: agnhost},
		harness.ImageFile{Path: "/agnhost-2", Link: "agnhost"}, harness.ImageFile{Path: "/uploads", Dir: true})
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		b, err := os.ReadFile(filepath.Join(k8s, "test/images/agnhost/porter", f))
		if err != nil {
			return im, err
		}
		im.Files = append(im.Files, harness.ImageFile{Path: "/" + f, Mode: 0o644, Data: b})
	}
	im.Entrypoint, im.Cmd = []string{"/agnhost"}, []string{"pause"}
	return im, nil
}

// kubernetesModuleDir is the pinned k8s.io/kubernetes module's source (the
// tools module's), for the files its images carry.
func kubernetesModuleDir() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes")
	cmd.Dir = filepath.Join(harness.RepoRoot(), "test", "tools")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate the k8s.io/kubernetes module: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
