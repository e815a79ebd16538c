package netconf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// Env is the plugin's view of its process environment and files.
type Env struct {
	Getenv   func(string) string
	ReadFile func(string) ([]byte, error)
	Hostname func() (string, error)
}

// OSEnv is the process environment and filesystem.
func OSEnv() Env { return Env{Getenv: os.Getenv, ReadFile: os.ReadFile, Hostname: os.Hostname} }

// seed reads X or CALICO_X, as Calico's envconfig does.
func (e Env) seed(name string) string {
	if e.Getenv == nil {
		return ""
	}
	if v := e.Getenv(name); v != "" {
		return v
	}
	return e.Getenv("CALICO_" + name)
}

// APIAccess merges the netconf over the environment seeds: the netconf wins,
// as in Calico (which exports netconf keys into the environment). timeout
// bounds each request.
func (c *NetConf) APIAccess(env Env, timeout time.Duration) kube.Access {
	first := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	policyRoot := c.Policy.APIRoot
	if i := strings.Index(policyRoot, "/api/"); i >= 0 {
		policyRoot = policyRoot[:i]
	}
	insecure, _ := strconv.ParseBool(env.seed("K8S_INSECURE_SKIP_TLS_VERIFY"))
	return kube.Access{
		UserAgent: buildinfo.String("kdd-cni"), Timeout: timeout,
		Kubeconfig:  first(c.Kubernetes.Kubeconfig, env.seed("KUBECONFIG")),
		Context:     env.seed("K8S_CURRENT_CONTEXT"),
		Server:      first(c.Kubernetes.APIRoot, policyRoot, env.seed("K8S_API_ENDPOINT")),
		Token:       first(c.Policy.AuthToken, env.seed("K8S_TOKEN"), env.seed("K8S_API_TOKEN")),
		CertFile:    first(c.Policy.ClientCertificate, env.seed("K8S_CERT_FILE")),
		KeyFile:     first(c.Policy.ClientKey, env.seed("K8S_KEY_FILE")),
		CAFile:      first(c.Policy.CertificateAuthority, env.seed("K8S_CA_FILE")),
		InsecureTLS: insecure,
	}
}

// ResolveNodename resolves this node's name: `nodename`, else the nodename file,
// else the deprecated `hostname`, else the OS hostname. The file is required
// only when no `nodename` is configured and nodename_file_optional is false.
func (c *NetConf) ResolveNodename(env Env) (string, error) {
	if c.Nodename != "" {
		return c.Nodename, nil
	}
	b, err := env.ReadFile(c.NodenameFile)
	switch {
	case err == nil:
		if n := strings.TrimSpace(string(b)); n != "" {
			return n, nil
		}
	case errors.Is(err, fs.ErrNotExist) && c.NodenameFileOptional:
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("failed to read node name: %s does not exist: set `nodename` in the network configuration or `nodename_file_optional: true`", c.NodenameFile)
	default:
		return "", fmt.Errorf("failed to read node name from %s: %w", c.NodenameFile, err)
	}
	if c.Hostname != "" {
		return c.Hostname, nil
	}
	h, err := env.Hostname()
	if err != nil {
		return "", fmt.Errorf("failed to get hostname for node name: %w", err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// PodCIDRNode is the node whose spec.podCIDRs feed usePodCidr.
func (c *NetConf) PodCIDRNode(nodename string) string {
	if c.Kubernetes.NodeName != "" {
		return c.Kubernetes.NodeName
	}
	return nodename
}

// EffectiveMTU is `mtu`, else the MTU file written by calico-node, else 0
// (the kernel default). With require_mtu_file the file must exist and hold a
// valid MTU even when `mtu` is set (which still wins): the key holds pods
// back until calico-node has written it.
func (c *NetConf) EffectiveMTU(env Env) (int, error) {
	if c.MTU > 0 && !c.RequireMTUFile {
		return c.MTU, nil
	}
	b, err := env.ReadFile(c.MTUFile)
	if errors.Is(err, fs.ErrNotExist) && !c.RequireMTUFile {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failed to read MTU file %s: %w", c.MTUFile, err)
	}
	mtu, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || mtu < 68 || mtu > 65535 {
		return 0, fmt.Errorf("invalid MTU %q in %s", strings.TrimSpace(string(b)), c.MTUFile)
	}
	if c.MTU > 0 {
		return c.MTU, nil
	}
	return mtu, nil
}
