package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/confcheck"
	"github.com/kdd-cni/kdd-cni/internal/health"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
)

// defaultNetDir is where runtimes read conflists.
const defaultNetDir = "/etc/cni/net.d"

// findConflist is the file runtimes would use: the first conflist (by
// name) in dir holding a calico plugin.
func findConflist(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("failed to list %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".conflist") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err == nil {
			if _, err := netconf.FromConflist(b, "calico"); err == nil {
				return filepath.Join(dir, n), nil
			}
		}
	}
	return "", fmt.Errorf("failed to find a conflist with a calico plugin in %s: %w", dir, fs.ErrNotExist)
}

// conflistFlags parses the flags of the commands that read a conflist.
func conflistFlags(cmd string, args []string) (file, kubeconfig string, err error) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.StringVar(&file, "f", "", "conflist (default: the calico conflist in "+defaultNetDir+")")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: the one the conflist names)")
	err = fs.Parse(args)
	return file, kubeconfig, err
}

// loadConflist reads and checks the conflist named by -f (else found in
// /etc/cni/net.d), with --kubeconfig overriding the one it names.
func loadConflist(path, kubeconfig string) (string, *confcheck.Result, error) {
	if path == "" {
		var err error
		if path, err = findConflist(defaultNetDir); err != nil {
			return "", nil, err
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return path, nil, fmt.Errorf("failed to read %s: %w", path, err)
	}
	r, err := confcheck.Conflist(b, netconf.OSEnv())
	if err != nil {
		return path, nil, err
	}
	if kubeconfig != "" {
		r.Conf.Kubernetes.Kubeconfig = kubeconfig
	}
	return path, r, nil
}

// status runs the checks behind CNI STATUS for the node the conflist is
// for, and shows every finding. Exit 1 when one fails (STATUS would).
func status(args []string, out io.Writer) (int, error) {
	file, kubeconfig, err := conflistFlags("status", args)
	if err != nil {
		return 2, err
	}
	path, r, err := loadConflist(file, kubeconfig)
	if err != nil {
		return 1, err
	}
	env := netconf.OSEnv()
	n, bad := health.ForConfig(health.Input{Conf: r.Conf, IPAM: r.IPAM, HostLocal: r.Conf.IPAM.Type == "host-local",
		Env: env, API: func() (*kube.Client, error) { return kube.New(r.Conf.APIAccess(env, 10*time.Second)) }})
	findings := bad
	if bad == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		findings = health.Check(ctx, n)
	}
	fmt.Fprintf(out, "conflist  %s\nnode      %s\n\n", path, n.Node)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, f := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Severity, f.Check, f.Message)
	}
	_ = tw.Flush()
	if len(health.Failed(findings)) > 0 {
		fmt.Fprintln(out, "\nnot ready: the runtime's CNI STATUS fails and new pods do not start on this node")
		return 1, nil
	}
	fmt.Fprintln(out, "\nready")
	return 0, nil
}

// validate checks a conflist as the plugin would read it, then the
// kubeconfig it names and the identity's rights. Exit 1 on any problem.
func validate(args []string, out io.Writer) (int, error) {
	file, kubeconfig, err := conflistFlags("validate", args)
	if err != nil {
		return 2, err
	}
	path, r, err := loadConflist(file, kubeconfig)
	if err != nil {
		fmt.Fprintf(out, "FAIL  %s: %v\n", path, err)
		return 1, nil
	}
	fmt.Fprintf(out, "OK    %s: the calico plugin accepts it (network %q, ipam %s)\n", path, r.Conf.Name, r.Conf.IPAM.Type)
	for _, w := range r.Warnings {
		fmt.Fprintf(out, "WARN  %s\n", w)
	}
	// The plugin's own loader must accept the credentials; the rights are
	// then asked with the same ones.
	a := r.Conf.APIAccess(netconf.OSEnv(), 10*time.Second)
	if _, err := kube.New(a); err != nil {
		fmt.Fprintf(out, "FAIL  kubeconfig: %v\n", err)
		return 1, nil
	}
	api, err := kubeclient.New(a, "")
	if err != nil {
		fmt.Fprintf(out, "FAIL  kubeconfig: %v\n", err)
		return 1, nil
	}
	return checkRights(api, out), nil
}
