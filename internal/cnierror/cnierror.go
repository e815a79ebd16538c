// Package cnierror gives the errors of kdd-cni's plugins (calico, podcidr)
// their CNI error codes, the same way for both.
package cnierror

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// ErrInvalidConfig marks errors in the network configuration (code 7).
var ErrInvalidConfig = errors.New("invalid network configuration")

// Coded gives an error its CNI code: a code set where the error arose is
// kept (with the full message); configuration errors are 7; datastore
// failures that may pass (unreachable, timeouts, 5xx, 429, a token not yet
// refreshed) are 11, "try again later"; the rest 999.
func Coded(err error) error {
	if err == nil {
		return nil
	}
	var te *types.Error
	switch {
	case errors.As(err, &te) && te.Code != 0:
		return &types.Error{Code: te.Code, Msg: err.Error(), Details: te.Details}
	case errors.Is(err, ErrInvalidConfig):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case kube.Transient(err):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Wrap makes a skel command return coded errors.
func Wrap(cmd func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error { return Coded(cmd(args)) }
}
