// Package kubeclient builds client-go clients for kdd-cni's long-running and
// interactive binaries (install-cni, kddctl). It reads the same settings as
// the plugins' minimal client (kube.Access: the kubeconfig, its context and
// the seeds' K8S_* overrides) but resolves them with clientcmd, as kubectl
// does: $KUBECONFIG lists merged, the context's namespace, exec credentials
// cached until they expire, the in-cluster configuration when nothing else
// is given. The exec'd plugins never import it: client-go's start-up cost
// is paid only by processes that live long enough to use it.
package kubeclient

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// Loader is a's kubeconfig resolution: a.Kubeconfig (one file, which must
// exist, or a list), else $KUBECONFIG, else ~/.kube/config where
// a.HomeKubeconfig allows it, else the in-cluster configuration; a.Context
// picks the context and namespace (kubectl's --namespace) overrides the
// context's. a's server, CA, TLS and credential fields override the
// kubeconfig's, as the plugins apply them.
func Loader(a kube.Access, namespace string) clientcmd.ClientConfig {
	rules := &clientcmd.ClientConfigLoadingRules{}
	list := a.Kubeconfig
	if list == "" {
		list = os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
	}
	switch files := filepath.SplitList(list); {
	case a.Kubeconfig != "" && len(files) == 1:
		rules.ExplicitPath = files[0]
	case len(files) > 0:
		rules.Precedence = files
	case a.HomeKubeconfig:
		rules.Precedence = []string{clientcmd.RecommendedHomeFile}
	}
	o := &clientcmd.ConfigOverrides{CurrentContext: a.Context}
	o.Context.Namespace = namespace
	o.ClusterInfo.Server = a.Server
	if a.CAFile != "" {
		o.ClusterInfo.CertificateAuthority = a.CAFile
	}
	if a.InsecureTLS {
		o.ClusterInfo.InsecureSkipTLSVerify = true
	}
	o.AuthInfo = clientcmdapi.AuthInfo{Token: a.Token, ClientCertificate: a.CertFile, ClientKey: a.KeyFile}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, o)
}

// Client is a typed clientset with the configuration it was built from.
type Client struct {
	kubernetes.Interface
	Config *rest.Config
	// Namespace is the context's namespace, or the one asked for ("default"
	// when neither names one).
	Namespace string
}

// New builds a client for a (namespace as in Loader); it makes no request.
func New(a kube.Access, namespace string) (*Client, error) {
	loader := Loader(a, namespace)
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load API credentials: %w", err)
	}
	if a.UserAgent != "" {
		cfg.UserAgent = a.UserAgent
	}
	if a.Timeout > 0 {
		cfg.Timeout = a.Timeout
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, fmt.Errorf("failed to read the context's namespace: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to build the API client: %w", err)
	}
	return &Client{Interface: cs, Config: cfg, Namespace: ns}, nil
}

// CAData is the cluster CA the client trusts (PEM), if any.
func (c *Client) CAData() ([]byte, error) {
	if len(c.Config.CAData) > 0 || c.Config.CAFile == "" {
		return c.Config.CAData, nil
	}
	b, err := os.ReadFile(c.Config.CAFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read the cluster CA: %w", err)
	}
	return b, nil
}
