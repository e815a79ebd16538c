package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kdd-cni/kdd-cni/kddctl/internal/typhacerts"
)

// typhaCerts prints the two Secrets Typha and Felix authenticate each
// other with (a new CA each run), for kubectl apply -f -.
func typhaCerts(args []string, out io.Writer) (int, error) {
	fs := flag.NewFlagSet("typha-certs", flag.ContinueOnError)
	ns := fs.String("n", "kube-system", "namespace of calico-typha and calico-node")
	validFor := fs.Duration("valid-for", 365*24*time.Hour, "how long the CA and certificates are valid")
	if err := fs.Parse(args); err != nil {
		return 2, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("%w: unexpected %q", errUsage, fs.Arg(0))
	}
	if errs := validation.IsDNS1123Label(*ns); len(errs) > 0 {
		return 2, fmt.Errorf("%w: namespace %q: %s", errUsage, *ns, strings.Join(errs, "; "))
	}
	b, err := typhacerts.Generate(time.Now(), *validFor)
	if err != nil {
		return 1, err
	}
	m, err := typhacerts.Manifest(b, *ns)
	if err != nil {
		return 1, err
	}
	if _, err := out.Write(m); err != nil {
		return 1, fmt.Errorf("failed to write the Secrets: %w", err)
	}
	return 0, nil
}
