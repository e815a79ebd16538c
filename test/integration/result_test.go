package integration

import (
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

func resultForVersion(ver string, b []byte) (types.Result, error) {
	return version.NewResult(ver, b)
}
