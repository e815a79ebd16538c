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
// get and check reach the API server as kubectl does (--kubeconfig, else
// $KUBECONFIG's files merged, else ~/.kube/config; --context; -n, else the
// context's namespace), with the seeds' DATASTORE_TYPE, K8S_API_ENDPOINT,
// K8S_CERT_FILE, K8S_KEY_FILE, K8S_CA_FILE and K8S_TOKEN applied over it;
// status and validate read the conflist's settings exactly as the plugin.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/pager"

	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
	"github.com/kdd-cni/kdd-cni/internal/naming"
	"github.com/kdd-cni/kdd-cni/internal/netconf"
	"github.com/kdd-cni/kdd-cni/kddctl/internal/view"
)

const usage = `usage:
  kddctl get workloadendpoints|wep [-n NAMESPACE | -A] [-o wide|json|yaml] [--kubeconfig PATH] [--context NAME]
  kddctl check [--kubeconfig PATH] [--context NAME] [--admin-kubeconfig PATH]
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

// apiFlags are the flags that choose the API server and identity, as
// kubectl's: --kubeconfig (else $KUBECONFIG's files merged, else
// ~/.kube/config), --context, and for namespaced commands -n/--namespace
// (else the context's namespace, else default).
type apiFlags struct {
	kubeconfig, context, namespace *string
}

func addAPIFlags(fs *flag.FlagSet, namespaced bool) apiFlags {
	f := apiFlags{kubeconfig: fs.String("kubeconfig", "", "kubeconfig file (e.g. /etc/cni/net.d/calico-kubeconfig)"),
		context: fs.String("context", "", "the kubeconfig context to use"), namespace: new(string)}
	if namespaced {
		fs.StringVar(f.namespace, "n", "", "namespace (default: the context's)")
		fs.StringVar(f.namespace, "namespace", "", "namespace (default: the context's)")
	}
	return f
}

// client builds a client-go client from the flags and the seeds' datastore
// settings (KUBECONFIG, K8S_API_ENDPOINT, K8S_CERT_FILE, K8S_KEY_FILE,
// K8S_CA_FILE, K8S_TOKEN), which override the kubeconfig as in the plugin.
func (f apiFlags) client() (*kubeclient.Client, error) {
	env := netconf.OSEnv()
	conf := &netconf.NetConf{}
	conf.Kubernetes.Kubeconfig = *f.kubeconfig
	if ds := conf.Datastore(env); ds != netconf.DatastoreKubernetes {
		return nil, fmt.Errorf("unsupported DATASTORE_TYPE %q: kddctl only reads the Kubernetes datastore", ds)
	}
	a := conf.APIAccess(env, 10*time.Second)
	a.HomeKubeconfig = true // as kubectl
	if *f.context != "" {
		a.Context = *f.context
	}
	a.UserAgent = buildinfo.String("kddctl")
	return kubeclient.New(a, *f.namespace)
}

func get(args []string, out io.Writer) (int, error) {
	if len(args) == 0 || (args[0] != "workloadendpoints" && args[0] != "workloadendpoint" && args[0] != "wep") {
		fmt.Fprint(os.Stderr, usage)
		return 2, fmt.Errorf("%w: kddctl get supports workloadendpoints (wep)", errUsage)
	}
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	api := addAPIFlags(fs, true)
	all := fs.Bool("A", false, "all namespaces")
	fs.BoolVar(all, "all-namespaces", false, "all namespaces")
	format := fs.String("o", "", "output: wide, json or yaml")
	if err := fs.Parse(args[1:]); err != nil {
		return 2, err
	}
	c, err := api.client()
	if err != nil {
		return 1, err
	}
	namespace := c.Namespace
	if *all {
		namespace = metav1.NamespaceAll
	}
	var pods []corev1.Pod
	err = pager.New(func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return c.CoreV1().Pods(namespace).List(ctx, opts)
	}).EachListItem(context.Background(), metav1.ListOptions{}, func(o runtime.Object) error {
		pods = append(pods, *o.(*corev1.Pod))
		return nil
	})
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
	required = []authzv1.ResourceAttributes{
		{Verb: "get", Resource: "pods"}, {Verb: "get", Resource: "nodes"},
		{Verb: "patch", Resource: "pods", Subresource: "status"},
	}
	excessive = []authzv1.ResourceAttributes{
		{Verb: "list", Resource: "pods"}, {Verb: "patch", Resource: "pods"},
		{Verb: "delete", Resource: "pods"}, {Verb: "list", Resource: "secrets"},
	}
)

func check(args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	flags := addAPIFlags(fs, false)
	adminKubeconfig := fs.String("admin-kubeconfig", "", "an admin's kubeconfig: also check the admission policies that scope the identity")
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	api, err := flags.client()
	if err != nil {
		return 1, err
	}
	code := checkRights(api, out)
	if code != 0 {
		return code, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := api.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		fmt.Fprintf(out, "FAIL  identity: failed to ask who the identity is: %v\n", err)
		return 1, nil
	}
	return checkScope(ctx, r.Status.UserInfo, *adminKubeconfig, out), nil
}

// checkRights proves the datastore answers the identity, that it has the
// rights the plugin needs, and warns of rights it should not have.
func checkRights(api *kubeclient.Client, out io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := api.Discovery().ServerVersion()
	if err != nil {
		fmt.Fprintf(out, "FAIL  datastore: %v\n", err)
		return 1
	}
	fmt.Fprintf(out, "OK    datastore: %s answers (%s)\n", api.Config.Host, v.GitVersion)
	code := 0
	canI := func(a authzv1.ResourceAttributes) (bool, error) {
		r, err := api.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &a}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	describe := func(a authzv1.ResourceAttributes) string {
		r := a.Resource
		if a.Subresource != "" {
			r += "/" + a.Subresource
		}
		return a.Verb + " " + r
	}
	for _, a := range required {
		ok, err := canI(a)
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
		if ok, err := canI(a); err == nil && ok {
			fmt.Fprintf(out, "WARN  %s: allowed, but the CNI identity does not need it\n", describe(a))
		}
	}
	return code
}
