package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// Credentials are loaded as kubectl loads them, without linking client-go
// (whose package initialisation alone costs a plugin invocation most of a
// millisecond): the kubeconfig (Access.Kubeconfig, else $KUBECONFIG, each
// a list of files merged as kubectl merges them; ~/.kube/config only where
// Access.HomeKubeconfig allows it) at its current context, else the
// in-cluster service account; then Access's fields override it. Supported:
// bearer tokens and token files, client certificates, basic auth, exec
// credential plugins (client.authentication.k8s.io, their answer cached
// until it expires), CA files and data, insecure-skip-tls-verify,
// tls-server-name and proxy-url. Refused with a clear error, as client-go
// refuses them or because kdd-cni would otherwise ignore them: auth-provider
// plugins, impersonation, a CA together with insecure-skip-tls-verify, a
// context naming a user or cluster the kubeconfig lacks.

// inClusterDir holds the service account's token and CA in a pod.
var inClusterDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// execTimeout bounds an exec credential plugin.
const execTimeout = 10 * time.Second

// kubeconfigFile is the part of a kubeconfig kdd-cni reads.
type kubeconfigFile struct {
	CurrentContext string         `json:"current-context"`
	Contexts       []namedContext `json:"contexts"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

type namedCluster struct {
	Name    string       `json:"name"`
	Cluster clusterEntry `json:"cluster"`
}

type namedUser struct {
	Name string    `json:"name"`
	User userEntry `json:"user"`
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
	// Impersonation: refused (the plugin's identity must be its own).
	As          string              `json:"as"`
	AsUID       string              `json:"as-uid"`
	AsGroups    []string            `json:"as-groups"`
	AsUserExtra map[string][]string `json:"as-user-extra"`
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
	paths := kubeconfigFiles(a)
	switch {
	case len(paths) > 0:
		where = strings.Join(paths, string(filepath.ListSeparator))
		if cr, err = readKubeconfigs(paths, a.Context); err != nil {
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
		// As kubectl's flag: it clears the kubeconfig's CA, not one given
		// beside it (that pair is refused in trust).
		cr.cluster.InsecureSkipTLSVerify = true
		if a.CAFile == "" {
			cr.cluster.CertificateAuthority, cr.cluster.CertificateAuthorityData = "", nil
		}
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

// kubeconfigFiles are the kubeconfig files to merge: Access.Kubeconfig,
// else $KUBECONFIG (lists, as kubectl reads them; files that do not exist
// are skipped), else ~/.kube/config where allowed; none means in-cluster.
func kubeconfigFiles(a Access) []string {
	list := a.Kubeconfig
	if list == "" {
		list = os.Getenv("KUBECONFIG")
	}
	files := filepath.SplitList(list)
	// A single file named explicitly must exist: its read says why not.
	explicitOne := a.Kubeconfig != "" && len(files) == 1
	var out []string
	for _, p := range files {
		if p != "" && (explicitOne || fileExists(p)) {
			out = append(out, p)
		}
	}
	if len(out) == 0 && list == "" && a.HomeKubeconfig {
		if home, err := os.UserHomeDir(); err == nil {
			if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readKubeconfigs merges kubeconfig files as kubectl does (the first file
// to name a context, cluster or user, or to set current-context, wins) and
// resolves the current context, or context when not empty (kubectl's
// --context); relative paths are relative to the file that holds them.
func readKubeconfigs(paths []string, context string) (credentials, error) {
	var merged kubeconfigFile
	seen := map[string]bool{}
	for _, path := range paths {
		f, err := parseKubeconfig(path)
		if err != nil {
			return credentials{}, err
		}
		if merged.CurrentContext == "" {
			merged.CurrentContext = f.CurrentContext
		}
		for _, c := range f.Contexts {
			if !seen["context/"+c.Name] {
				seen["context/"+c.Name] = true
				merged.Contexts = append(merged.Contexts, c)
			}
		}
		for _, c := range f.Clusters {
			if !seen["cluster/"+c.Name] {
				seen["cluster/"+c.Name] = true
				merged.Clusters = append(merged.Clusters, c)
			}
		}
		for _, u := range f.Users {
			if !seen["user/"+u.Name] {
				seen["user/"+u.Name] = true
				merged.Users = append(merged.Users, u)
			}
		}
	}
	if context != "" {
		merged.CurrentContext = context
	}
	return merged.current()
}

// parseKubeconfig reads one file and makes its relative paths absolute.
func parseKubeconfig(path string) (kubeconfigFile, error) {
	var f kubeconfigFile
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("invalid kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for i := range f.Clusters {
		abs(&f.Clusters[i].Cluster.CertificateAuthority)
	}
	for i := range f.Users {
		u := &f.Users[i].User
		abs(&u.TokenFile)
		abs(&u.ClientCertificate)
		abs(&u.ClientKey)
		if e := u.Exec; e != nil && strings.ContainsRune(e.Command, filepath.Separator) {
			abs(&e.Command)
		}
	}
	return f, nil
}

// current resolves the current context: its cluster and user, which must
// exist when named (kubectl refuses a context naming a missing one, where
// kdd-cni would otherwise talk to the server anonymously).
func (f *kubeconfigFile) current() (credentials, error) {
	var cr credentials
	if f.CurrentContext == "" {
		return cr, nil // Access may still name the server
	}
	for _, c := range f.Contexts {
		if c.Name != f.CurrentContext {
			continue
		}
		if c.Context.Cluster != "" {
			i := slices.IndexFunc(f.Clusters, func(x namedCluster) bool { return x.Name == c.Context.Cluster })
			if i < 0 {
				return cr, fmt.Errorf("invalid kubeconfig: context %q names cluster %q, which it does not define", c.Name, c.Context.Cluster)
			}
			cr.cluster = f.Clusters[i].Cluster
		}
		if c.Context.User != "" {
			i := slices.IndexFunc(f.Users, func(x namedUser) bool { return x.Name == c.Context.User })
			if i < 0 {
				return cr, fmt.Errorf("invalid kubeconfig: context %q names user %q, which it does not define", c.Name, c.Context.User)
			}
			cr.user = f.Users[i].User
		}
		return cr, nil
	}
	return cr, fmt.Errorf("invalid kubeconfig: context %q not found", f.CurrentContext)
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
	case cr.cluster.InsecureSkipTLSVerify && (len(ca) > 0 || cr.cluster.CertificateAuthority != ""):
		return nil, nil, errors.New("a CA together with insecure-skip-tls-verify is refused, as kubectl refuses it: drop one of them")
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
func (cr *credentials) identity(ca []byte, execDeadline time.Time) (*auth, *tls.Certificate, error) {
	u := cr.user
	if u.AuthProvider != nil {
		return nil, nil, fmt.Errorf("the %q auth-provider is not supported: use a token, a client certificate or an exec credential plugin", u.AuthProvider.Name)
	}
	if u.As != "" || u.AsUID != "" || len(u.AsGroups) > 0 || len(u.AsUserExtra) > 0 {
		return nil, nil, errors.New("impersonation (as, as-uid, as-groups, as-user-extra) is not supported: the kubeconfig must name the identity itself")
	}
	a := &auth{token: u.Token, tokenFile: u.TokenFile, username: u.Username, password: u.Password}
	certPEM, keyPEM := u.ClientCertificateData, u.ClientKeyData
	if u.Exec != nil && a.token == "" && a.tokenFile == "" && len(certPEM) == 0 && u.ClientCertificate == "" {
		cred, err := execCredential(u.Exec, cr.cluster, ca, execDeadline)
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
	Token                 string     `json:"token"`
	ClientCertificateData string     `json:"clientCertificateData"`
	ClientKeyData         string     `json:"clientKeyData"`
	ExpirationTimestamp   *time.Time `json:"expirationTimestamp"`
}

// execCache keeps exec credential plugins' answers until they expire, as
// client-go does: a long-running install-cni or kddctl builds clients
// often, and the plugin must not run for each.
var execCache struct {
	sync.Mutex
	m map[string]execStatus
}

// execCredential is the exec plugin's answer, from the cache while it has
// not expired (one without an expiry is not cached).
func execCredential(e *execConfig, cluster clusterEntry, ca []byte, deadline time.Time) (execStatus, error) {
	key, _ := json.Marshal([]any{e, cluster, ca})
	execCache.Lock()
	defer execCache.Unlock()
	if c, ok := execCache.m[string(key)]; ok && time.Now().Before(*c.ExpirationTimestamp) {
		return c, nil
	}
	c, err := runExec(e, cluster, ca, deadline)
	if err != nil {
		return c, err
	}
	if c.ExpirationTimestamp != nil {
		if execCache.m == nil {
			execCache.m = map[string]execStatus{}
		}
		execCache.m[string(key)] = c
	}
	return c, nil
}

// execWaitDelay bounds how long the plugin's output is waited for once it
// was killed: a child it left holding stdout must not hold the command.
const execWaitDelay = 500 * time.Millisecond

// runExec runs an exec credential plugin, non-interactively, within its
// 10 s limit and the deadline. Its stderr is never shown: a plugin may
// print secrets there, and errors reach the pod's Events.
func runExec(e *execConfig, cluster clusterEntry, ca []byte, deadline time.Time) (execStatus, error) {
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
	if !deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
		defer cancelDeadline()
	}
	cmd := exec.CommandContext(ctx, e.Command, e.Args...)
	cmd.WaitDelay = execWaitDelay
	cmd.Env = append(os.Environ(), "KUBERNETES_EXEC_INFO="+string(info))
	for _, v := range e.Env {
		cmd.Env = append(cmd.Env, v.Name+"="+v.Value)
	}
	cmd.Stderr = io.Discard
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return execStatus{}, fmt.Errorf("failed to run the exec credential plugin %s: %w", e.Command, ctx.Err())
	}
	if err != nil {
		return execStatus{}, fmt.Errorf("failed to run the exec credential plugin %s: %w (its stderr is not shown: it may hold secrets)", e.Command, err)
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
