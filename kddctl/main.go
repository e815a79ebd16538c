// Command kddctl is kdd-cni's operator CLI for the Kubernetes datastore:
//
//	kddctl get workloadendpoints|wep [-n NS | -A] [-o wide|json|yaml]
//	kddctl check        datastore connectivity, the CNI identity's rights, its
//	                    node binding and (with an admin's kubeconfig) the
//	                    admission policies that scope it
//	kddctl status       the node's readiness, every reason CNI STATUS checks
//	kddctl validate     a conflist as the plugin reads it, its kubeconfig and rights
//	kddctl typha-certs  the Secrets Felix and Typha authenticate each other
//	                    with (mutual TLS), for kubectl apply -f -
//	kddctl version
//
// It reads the datastore settings like the plugin: --kubeconfig, else the
// seeds DATASTORE_TYPE, KUBECONFIG, K8S_API_ENDPOINT, K8S_CERT_FILE,
// K8S_KEY_FILE, K8S_CA_FILE, K8S_TOKEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/kddctl/internal/view"
)

const usage = `usage:
  kddctl get workloadendpoints|wep [-n NAMESPACE | -A] [-o wide|json|yaml] [--kubeconfig PATH]
  kddctl check [--kubeconfig PATH] [--admin-kubeconfig PATH]
  kddctl status [-f CONFLIST] [--kubeconfig PATH]
  kddctl validate [-f CONFLIST] [--kubeconfig PATH]
  kddctl typha-certs [-n NAMESPACE] [--valid-for DURATION] | kubectl apply -f -
  kddctl version
`

func main() {
	code, err := run(os.Args[1:], os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kddctl:", err)
	}
	os.Exit(code)
}

var errUsage = errors.New("invalid arguments")

func run(args []string, out io.Writer) (int, error) {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2, nil
	}
	switch args[0] {
	case "version", "-v", "--version":
		fmt.Fprintln(out, buildinfo.String("kddctl"))
		return 0, nil
	case "get":
		return get(args[1:], out)
	case "check":
		return check(args[1:], out)
	case "status":
		return status(args[1:], out)
	case "validate":
		return validate(args[1:], out)
	case "typha-certs":
		return typhaCerts(args[1:], out)
	}
	fmt.Fprint(os.Stderr, usage)
	return 2, fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func client(kubeconfig string) (*kube.Client, error) {
	env := netconf.OSEnv()
	conf := &netconf.NetConf{}
	conf.Kubernetes.Kubeconfig = kubeconfig
	if ds := conf.Datastore(env); ds != netconf.DatastoreKubernetes {
		return nil, fmt.Errorf("unsupported DATASTORE_TYPE %q: kddctl only reads the Kubernetes datastore", ds)
	}
	a := conf.APIAccess(env, 10*time.Second)
	a.HomeKubeconfig = true // as kubectl
	return kube.New(a)
}

func get(args []string, out io.Writer) (int, error) {
	if len(args) == 0 || (args[0] != "workloadendpoints" && args[0] != "workloadendpoint" && args[0] != "wep") {
		fmt.Fprint(os.Stderr, usage)
		return 2, fmt.Errorf("%w: kddctl get supports workloadendpoints (wep)", errUsage)
	}
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	ns := fs.String("n", "default", "namespace")
	fs.StringVar(ns, "namespace", "default", "namespace")
	all := fs.Bool("A", false, "all namespaces")
	fs.BoolVar(all, "all-namespaces", false, "all namespaces")
	format := fs.String("o", "", "output: wide, json or yaml")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
	api, err := client(*kubeconfig)
	if err != nil {
		return 1, err
	}
	namespace := *ns
	if *all {
		namespace = ""
	}
	pods, err := api.ListPods(context.Background(), namespace)
	if err != nil {
		return 1, fmt.Errorf("failed to list pods: %w", err)
	}
	weps := view.FromPods(pods, naming.InterfacePrefix(os.Getenv("FELIX_INTERFACEPREFIX")))
	if err := view.Write(out, weps, *format, *all); err != nil {
		return 1, err
	}
	return 0, nil
}

// The CNI identity's needs, and rights it should not have.
var (
	required = []kube.ResourceAccess{
		{Verb: "get", Resource: "pods"}, {Verb: "get", Resource: "nodes"},
		{Verb: "patch", Resource: "pods", Subresource: "status"},
	}
	excessive = []kube.ResourceAccess{
		{Verb: "list", Resource: "pods"}, {Verb: "patch", Resource: "pods"},
		{Verb: "delete", Resource: "pods"}, {Verb: "list", Resource: "secrets"},
	}
)

func check(args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (e.g. /etc/cni/net.d/calico-kubeconfig)")
	adminKubeconfig := fs.String("admin-kubeconfig", "", "an admin's kubeconfig: also check the admission policies that scope the identity")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	api, err := client(*kubeconfig)
	if err != nil {
		return 1, err
	}
	code := checkRights(api, out)
	if code != 0 {
		return code, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := api.WhoAmI(ctx)
	if err != nil {
		fmt.Fprintf(out, "FAIL  identity: %v\n", err)
		return 1, nil
	}
	return checkScope(ctx, id, *adminKubeconfig, out), nil
}

// checkRights proves the datastore answers the identity, that it has the
// rights the plugin needs, and warns of rights it should not have.
func checkRights(api *kube.Client, out io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := api.Version(ctx)
	if err != nil {
		fmt.Fprintf(out, "FAIL  datastore: %v\n", err)
		return 1
	}
	fmt.Fprintf(out, "OK    datastore: %s answers (%s)\n", api.Server(), v)
	code := 0
	describe := func(a kube.ResourceAccess) string {
		r := a.Resource
		if a.Subresource != "" {
			r += "/" + a.Subresource
		}
		return a.Verb + " " + r
	}
	for _, a := range required {
		ok, err := api.CanI(ctx, a)
		switch {
		case err != nil:
			fmt.Fprintf(out, "FAIL  %s: %v\n", describe(a), err)
			code = 1
		case !ok:
			fmt.Fprintf(out, "FAIL  %s: denied (the plugin needs it)\n", describe(a))
			code = 1
		default:
			fmt.Fprintf(out, "OK    %s\n", describe(a))
		}
	}
	for _, a := range excessive {
		if ok, err := api.CanI(ctx, a); err == nil && ok {
			fmt.Fprintf(out, "WARN  %s: allowed, but the CNI identity does not need it\n", describe(a))
		}
	}
	return code
}
