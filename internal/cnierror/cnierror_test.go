package cnierror

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/kdd-cni/kdd-cni/internal/kube"
)

func TestCoded(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		code uint
	}{
		"config":    {fmt.Errorf("%w: bad mtu", ErrInvalidConfig), types.ErrInvalidNetworkConfig},
		"timeout":   {fmt.Errorf("GET node: %w", context.DeadlineExceeded), types.ErrTryAgainLater},
		"503":       {&kube.APIError{Code: 503}, types.ErrTryAgainLater},
		"403":       {&kube.APIError{Code: 403}, types.ErrInternal},
		"kept code": {fmt.Errorf("pod x: %w", types.NewError(types.ErrInvalidEnvironmentVariables, "bad", "")), types.ErrInvalidEnvironmentVariables},
		"plain":     {errors.New("boom"), types.ErrInternal},
		// A wrong CA does not pass by waiting.
		"untrusted certificate": {&url.Error{Op: "Get", URL: "https://x", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, types.ErrInternal},
	} {
		var te *types.Error
		if !errors.As(Coded(tc.err), &te) || te.Code != tc.code {
			t.Errorf("%s: %+v, want code %d", name, te, tc.code)
		}
	}
	if Coded(nil) != nil {
		t.Error("nil must stay nil")
	}
}
