// Package faults runs many ADD/DEL cycles of the real plugin against a real
// apiserver while injecting faults, then checks that nothing leaked and that
// every pod's annotations agree with its live sandbox. KDD_FAULT_CYCLES
// sets the length (make test: a short run; make faults: 1000).
package faults

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

var suite *harness.Suite

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("fault tests skipped: they need root for network namespaces")
		os.Exit(m.Run())
	}
	var err error
	if suite, err = harness.StartSuite(context.Background(), harness.Options{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, suite.CP.Logs(2000))
	}
	if err := suite.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
