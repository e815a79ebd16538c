package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// Credentials are loaded as kubectl loads them, without linking client-go
// (whose package initialisation alone costs a plugin invocation most of a
// millisecond): the kubeconfig (Access.Kubeconfig, else the first file of
// $KUBECONFIG, else ~/.kube/config) at its current context, else the
// in-cluster service account; then Access's fields override it. Supported:
// bearer tokens and token files, client certificates, basic auth, exec
// credential plugins (client.authentication.k8s.io), CA files and data,
// insecure-skip-tls-verify, tls-server-name and proxy-url. Auth-provider
// plugins (removed from kubectl) are refused with a clear error.

// inClusterDir holds the service account's token and CA in a pod.
var inClusterDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// execTimeout bounds an exec credential plugin.
const execTimeout = 10 * time.Second

// kubeconfigFile is the part of a kubeconfig kdd-cni reads.
type kubeconfigFile struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string       `json:"name"`
		Cluster clusterEntry `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string    `json:"name"`
		User userEntry `json:"user"`
	} `json:"users"`
}

type clusterEntry struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority"`
	CertificateAuthorityData []byte `json:"certificate-authority-data"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
	TLSServerName            string `json:"tls-server-name"`
	ProxyURL                 string `json:"proxy-url"`
}

type userEntry struct {
	Token                 string      `json:"token"`
	TokenFile             string      `json:"tokenFile"`
	ClientCertificate     string      `json:"client-certificate"`
	ClientCertificateData []byte      `json:"client-certificate-data"`
	ClientKey             string      `json:"client-key"`
	ClientKeyData         []byte      `json:"client-key-data"`
	Username              string      `json:"username"`
	Password              string      `json:"password"`
	Exec                  *execConfig `json:"exec"`
	AuthProvider          *struct {
		Name string `json:"name"`
	} `json:"auth-provider"`
}

type execConfig struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"env"`
	APIVersion         string `json:"apiVersion"`
	ProvideClusterInfo bool   `json:"provideClusterInfo"`
}

// credentials are one resolved cluster and user.
type credentials struct {
	cluster clusterEntry
	user    userEntry
}

// loadCredentials resolves a's kubeconfig or the in-cluster configuration
// and applies a's overrides; where names the source for errors.
func loadCredentials(a Access) (cr credentials, where string, err error) {
	path := a.Kubeconfig
	if path == "" {
		path = defaultKubeconfig()
	}
	switch {
	case path != "":
		where = path
		if cr, err = readKubeconfig(path); err != nil {
			return cr, where, err
		}
	case a.Server == "":
		where = "the in-cluster configuration"
		if cr, err = inCluster(); err != nil {
			return cr, "the default kubeconfig or in-cluster config", err
		}
	default:
		where = "the plugin configuration"
	}
	if a.Server != "" {
		cr.cluster.Server = a.Server
	}
	if a.CAFile != "" {
		cr.cluster.CertificateAuthority, cr.cluster.CertificateAuthorityData = a.CAFile, nil
	}
	if a.InsecureTLS {
		cr.cluster.InsecureSkipTLSVerify = true
	}
	if a.Token != "" {
		cr.user.Token, cr.user.TokenFile = a.Token, ""
	}
	if a.CertFile != "" {
		cr.user.ClientCertificate, cr.user.ClientCertificateData = a.CertFile, nil
	}
	if a.KeyFile != "" {
		cr.user.ClientKey, cr.user.ClientKeyData = a.KeyFile, nil
	}
	if cr.cluster.Server == "" {
		return cr, where, errors.New("no API server address: the kubeconfig's current context names no cluster server")
	}
	return cr, where, nil
}

// defaultKubeconfig is the first existing file of $KUBECONFIG, else
// ~/.kube/config if it exists, else "".
func defaultKubeconfig() string {
	candidates := filepath.SplitList(os.Getenv("KUBECONFIG"))
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, ".kube", "config"))
	}
	for _, p := range candidates {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// readKubeconfig resolves a kubeconfig's current context; relative file
// paths in it are relative to the kubeconfig's directory.
func readKubeconfig(path string) (credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return credentials{}, err
	}
	var f kubeconfigFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return credentials{}, fmt.Errorf("invalid kubeconfig: %w", err)
	}
	var cr credentials
	if f.CurrentContext == "" {
		return cr, nil // Access may still name the server
	}
	found := false
	for _, c := range f.Contexts {
		if c.Name != f.CurrentContext {
			continue
		}
		found = true
		for _, cl := range f.Clusters {
			if cl.Name == c.Context.Cluster {
				cr.cluster = cl.Cluster
			}
		}
		for _, u := range f.Users {
			if u.Name == c.Context.User {
				cr.user = u.User
			}
		}
	}
	if !found {
		return cr, fmt.Errorf("invalid kubeconfig: context %q not found", f.CurrentContext)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&cr.cluster.CertificateAuthority, &cr.user.TokenFile, &cr.user.ClientCertificate, &cr.user.ClientKey} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if e := cr.user.Exec; e != nil && strings.ContainsRune(e.Command, filepath.Separator) && !filepath.IsAbs(e.Command) {
		e.Command = filepath.Join(dir, e.Command)
	}
	return cr, nil
}

// inCluster is the pod's service account and the kubernetes Service.
func inCluster() (credentials, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return credentials{}, errors.New("no kubeconfig found, and not in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT unset)")
	}
	token := filepath.Join(inClusterDir, "token")
	if _, err := os.Stat(token); err != nil {
		return credentials{}, fmt.Errorf("no kubeconfig found, and no service account token: %w", err)
	}
	return credentials{
		cluster: clusterEntry{Server: "https://" + net.JoinHostPort(host, port), CertificateAuthority: filepath.Join(inClusterDir, "ca.crt")},
		user:    userEntry{TokenFile: token},
	}, nil
}

// trust is the TLS configuration that verifies the server (no client
// certificate yet) and the CA it trusts (PEM, if any).
func (cr *credentials) trust() (*tls.Config, []byte, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cr.cluster.TLSServerName}
	ca := cr.cluster.CertificateAuthorityData
	if len(ca) == 0 && cr.cluster.CertificateAuthority != "" {
		var err error
		if ca, err = os.ReadFile(cr.cluster.CertificateAuthority); err != nil {
			return nil, nil, fmt.Errorf("failed to read CA file: %w", err)
		}
	}
	switch {
	case cr.cluster.InsecureSkipTLSVerify:
		tc.InsecureSkipVerify = true
	case len(ca) > 0:
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(ca) {
			return nil, nil, errors.New("invalid CA: no PEM certificate in it")
		}
	}
	return tc, ca, nil
}

// identity is how requests authenticate: a token or basic auth, and a
// client certificate (nil for none). An exec plugin runs here, when the
// user has neither a token nor a certificate of its own.
func (cr *credentials) identity(ca []byte) (*auth, *tls.Certificate, error) {
	u := cr.user
	if u.AuthProvider != nil {
		return nil, nil, fmt.Errorf("the %q auth-provider is not supported: use a token, a client certificate or an exec credential plugin", u.AuthProvider.Name)
	}
	a := &auth{token: u.Token, tokenFile: u.TokenFile, username: u.Username, password: u.Password}
	certPEM, keyPEM := u.ClientCertificateData, u.ClientKeyData
	if u.Exec != nil && a.token == "" && a.tokenFile == "" && len(certPEM) == 0 && u.ClientCertificate == "" {
		cred, err := runExec(u.Exec, cr.cluster, ca)
		if err != nil {
			return nil, nil, err
		}
		a.token, certPEM, keyPEM = cred.Token, []byte(cred.ClientCertificateData), []byte(cred.ClientKeyData)
	}
	if err := a.load(); err != nil {
		return nil, nil, err
	}
	var err error
	if len(certPEM) == 0 && u.ClientCertificate != "" {
		if certPEM, err = os.ReadFile(u.ClientCertificate); err != nil {
			return nil, nil, fmt.Errorf("failed to read client certificate: %w", err)
		}
	}
	if len(keyPEM) == 0 && u.ClientKey != "" {
		if keyPEM, err = os.ReadFile(u.ClientKey); err != nil {
			return nil, nil, fmt.Errorf("failed to read client key: %w", err)
		}
	}
	if len(certPEM) == 0 && len(keyPEM) == 0 {
		return a, nil, nil
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid client certificate or key: %w", err)
	}
	return a, &cert, nil
}

// transport is the HTTP transport for the cluster's proxy (proxy-url, else
// the environment's) and TLS configuration.
func (cr *credentials) transport(tc *tls.Config) (*http.Transport, error) {
	proxy := http.ProxyFromEnvironment
	if cr.cluster.ProxyURL != "" {
		u, err := url.Parse(cr.cluster.ProxyURL)
		if err != nil {
			return nil, fmt.Errorf("invalid proxy-url: %w", err)
		}
		proxy = http.ProxyURL(u)
	}
	return &http.Transport{
		Proxy:               proxy,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 25,
		IdleConnTimeout:     90 * time.Second,
		// A connection that stops answering (a watch on a dead peer) is
		// found within 45s, as client-go finds it.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}, nil
}

// auth authenticates requests: a bearer token (a token file is read again
// once a minute, as projected tokens rotate) or basic auth.
type auth struct {
	token, tokenFile   string
	username, password string

	mu   sync.Mutex
	read time.Time
}

// load reads the token file, if any.
func (a *auth) load() error {
	if a.tokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return fmt.Errorf("failed to read token file: %w", err)
	}
	a.token, a.read = strings.TrimSpace(string(b)), time.Now()
	return nil
}

// bearer is the token to send ("" for none).
func (a *auth) bearer() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokenFile != "" && time.Since(a.read) > time.Minute {
		_ = a.load() // keep the previous token if the file is unreadable
	}
	return a.token
}

func (a *auth) apply(req *http.Request) {
	if t := a.bearer(); t != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	} else if a.username != "" {
		req.SetBasicAuth(a.username, a.password)
	}
}

// execStatus is an ExecCredential's status.
type execStatus struct {
	Token                 string `json:"token"`
	ClientCertificateData string `json:"clientCertificateData"`
	ClientKeyData         string `json:"clientKeyData"`
}

// runExec runs an exec credential plugin, non-interactively.
func runExec(e *execConfig, cluster clusterEntry, ca []byte) (execStatus, error) {
	spec := map[string]any{"interactive": false}
	if e.ProvideClusterInfo {
		spec["cluster"] = map[string]any{"server": cluster.Server, "tls-server-name": cluster.TLSServerName,
			"insecure-skip-tls-verify": cluster.InsecureSkipTLSVerify, "certificate-authority-data": ca, "proxy-url": cluster.ProxyURL}
	}
	info, err := json.Marshal(map[string]any{"apiVersion": e.APIVersion, "kind": "ExecCredential", "spec": spec})
	if err != nil {
		return execStatus{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Command, e.Args...)
	cmd.Env = append(os.Environ(), "KUBERNETES_EXEC_INFO="+string(info))
	for _, v := range e.Env {
		cmd.Env = append(cmd.Env, v.Name+"="+v.Value)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return execStatus{}, fmt.Errorf("failed to run the exec credential plugin %s: %w: %s", e.Command, err, strings.TrimSpace(stderr.String()))
	}
	var cred struct {
		APIVersion string     `json:"apiVersion"`
		Status     execStatus `json:"status"`
	}
	if err := json.Unmarshal(out, &cred); err != nil {
		return execStatus{}, fmt.Errorf("invalid answer from the exec credential plugin %s: %w", e.Command, err)
	}
	if e.APIVersion != "" && cred.APIVersion != e.APIVersion {
		return execStatus{}, fmt.Errorf("the exec credential plugin %s answered %q, want %q", e.Command, cred.APIVersion, e.APIVersion)
	}
	if cred.Status.Token == "" && cred.Status.ClientCertificateData == "" {
		return execStatus{}, fmt.Errorf("the exec credential plugin %s gave neither a token nor a client certificate", e.Command)
	}
	return cred.Status, nil
}
