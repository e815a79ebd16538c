// Package anp runs the network-policy-api conformance suite (the pinned
// sigs.k8s.io/network-policy-api module's v1alpha1 AdminNetworkPolicy and
// BaselineAdminNetworkPolicy core tests) against the cluster its kubeconfig
// names. test/tools/build.sh assembles it in the tool cache with the
// module's base manifests beside this file (embedded below), the SCTP
// server containers left out (this kernel has no SCTP); test/e2e names the
// tests to skip.
package anp

import (
	"embed"
	"flag"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"sigs.k8s.io/network-policy-api/apis/v1alpha1"
	"sigs.k8s.io/network-policy-api/conformance/tests"
	"sigs.k8s.io/network-policy-api/conformance/utils/suite"
)

//go:embed base
var manifests embed.FS

var (
	features = flag.String("supported-features", "AdminNetworkPolicy,BaselineAdminNetworkPolicy", "the features to test, comma-separated")
	skip     = flag.String("skip-tests", "", "the tests not to run (ShortNames), comma-separated")
	debug    = flag.Bool("debug", false, "log every probe")
)

func TestAdminNetworkPolicyConformance(t *testing.T) {
	cfg, err := config.GetConfig()
	if err != nil {
		t.Fatalf("load the kubeconfig: %v", err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("make a client: %v", err)
	}
	if err := v1alpha1.AddToScheme(c.Scheme()); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("make a clientset: %v", err)
	}
	supported := sets.New[suite.SupportedFeature]()
	for _, f := range strings.Split(*features, ",") {
		supported.Insert(suite.SupportedFeature(f))
	}
	s := suite.New(suite.Options{
		Client: c, ClientSet: cs, KubeConfig: *cfg, Debug: *debug,
		CleanupBaseResources: true, SupportedFeatures: supported,
		SkipTests: strings.Split(*skip, ","), FS: &manifests,
	})
	s.Setup(t)
	s.Run(t, tests.ConformanceTests)
}
