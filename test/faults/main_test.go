// Package faults runs many ADD/DEL cycles of the real plugin against a real
// apiserver while injecting faults, then checks that nothing leaked and that
// every pod's annotations agree with its live sandbox. KDD_FAULT_CYCLES
// sets the length (make test: a short run; make faults: 1000).
package faults

import (
	"os"
	"testing"

	"github.com/kdd-cni/kdd-cni/test/harness"
)

var suite *harness.Suite

func TestMain(m *testing.M) {
	os.Exit(harness.RunSuite(m, harness.Options{}, func(s *harness.Suite) error { suite = s; return nil }))
}
