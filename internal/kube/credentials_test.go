package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiServer is a TLS server that records how each request authenticated.
type apiServer struct {
	*httptest.Server
	ca []byte // PEM

	mu   sync.Mutex
	seen []string // "Bearer x", "Basic ...", "cert:CN"
}

func newAPIServer(t *testing.T) *apiServer {
	s := &apiServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := r.Header.Get("Authorization")
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			who = "cert:" + r.TLS.PeerCertificates[0].Subject.CommonName
		}
		s.mu.Lock()
		s.seen = append(s.seen, who)
		s.mu.Unlock()
		_, _ = w.Write([]byte(`{"gitVersion":"v1.37.2"}`))
	}))
	s.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	s.EnableHTTP2 = true
	s.StartTLS()
	t.Cleanup(s.Close)
	s.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	return s
}

func (s *apiServer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return ""
	}
	return s.seen[len(s.seen)-1]
}

// clientCert is a self-signed client certificate and key (PEM).
func clientCert(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// kubeconfig writes a kubeconfig whose current context uses cluster and
// user (YAML fragments, indented for their place).
func kubeconfig(t *testing.T, dir, cluster, user string) string {
	return writeFile(t, dir, "kubeconfig", `apiVersion: v1
kind: Config
current-context: ctx
contexts:
- name: other
  context: {cluster: nowhere, user: nobody}
- name: ctx
  context: {cluster: c, user: u}
clusters:
- name: nowhere
  cluster: {server: "https://192.0.2.1:1"}
- name: c
  cluster:
`+cluster+`
users:
- name: u
  user:
`+user+`
`, 0o600)
}

func version(t *testing.T, a Access) error {
	t.Helper()
	c, err := New(a)
	if err != nil {
		return err
	}
	_, err = c.Version(context.Background())
	return err
}

func TestCredentialsFromKubeconfig(t *testing.T) {
	srv := newAPIServer(t)
	caData := base64.StdEncoding.EncodeToString(srv.ca)
	certPEM, keyPEM := clientCert(t, "node-a")
	dir := t.TempDir()
	writeFile(t, dir, "ca.crt", string(srv.ca), 0o600)
	writeFile(t, dir, "token", "from-file\n", 0o600)
	writeFile(t, dir, "client.crt", string(certPEM), 0o600)
	writeFile(t, dir, "client.key", string(keyPEM), 0o600)
	writeFile(t, dir, "exec-plugin", `#!/bin/sh
case "$KUBERNETES_EXEC_INFO" in *'"interactive":false'*) ;; *) echo "no exec info" >&2; exit 1 ;; esac
echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-exec-'"$EXTRA"'"}}'
`, 0o755)
	server := "    server: " + srv.URL + "\n"
	for _, tc := range []struct {
		name          string
		cluster, user string
		access        Access
		want          string
	}{
		{"token, inline CA", server + "    certificate-authority-data: " + caData, "    token: tok", Access{}, "Bearer tok"},
		{"token file and CA file, relative", server + "    certificate-authority: ca.crt", "    tokenFile: token", Access{}, "Bearer from-file"},
		{"client certificate files", server + "    certificate-authority: ca.crt", "    client-certificate: client.crt\n    client-key: client.key", Access{}, "cert:node-a"},
		{"client certificate data", server + "    certificate-authority: ca.crt",
			"    client-certificate-data: " + base64.StdEncoding.EncodeToString(certPEM) + "\n    client-key-data: " + base64.StdEncoding.EncodeToString(keyPEM), Access{}, "cert:node-a"},
		{"basic auth", server + "    certificate-authority: ca.crt", "    username: admin\n    password: secret", Access{}, "Basic YWRtaW46c2VjcmV0"},
		{"exec plugin", server + "    certificate-authority: ca.crt",
			"    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./exec-plugin\n      env: [{name: EXTRA, value: x}]\n      provideClusterInfo: true", Access{}, "Bearer from-exec-x"},
		{"insecure", server + "    insecure-skip-tls-verify: true", "    token: tok", Access{}, "Bearer tok"},
		{"insecure override clears the kubeconfig's CA", server + "    certificate-authority: ca.crt", "    token: tok", Access{InsecureTLS: true}, "Bearer tok"},
		{"overrides win", "    server: https://192.0.2.1:1", "    token: tok",
			Access{Server: srv.URL, CAFile: filepath.Join(dir, "ca.crt"), Token: "override"}, "Bearer override"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.access.Kubeconfig = kubeconfig(t, dir, tc.cluster, tc.user)
			if err := version(t, tc.access); err != nil {
				t.Fatal(err)
			}
			if got := srv.last(); got != tc.want {
				t.Errorf("authenticated as %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCredentialErrors(t *testing.T) {
	srv := newAPIServer(t)
	dir := t.TempDir()
	otherCA, _ := clientCert(t, "other-ca") // did not sign srv's certificate
	writeFile(t, dir, "other-ca.crt", string(otherCA), 0o600)
	writeFile(t, dir, "failing-plugin", "#!/bin/sh\necho 'denied: secret-s3cr3t' >&2\nexit 3\n", 0o755)
	writeFile(t, dir, "ca.crt", string(srv.ca), 0o600)
	server := "    server: " + srv.URL + "\n"
	for _, tc := range []struct {
		name, cluster, user, want string
	}{
		{"wrong CA", server + "    certificate-authority: other-ca.crt", "    token: tok", "certificate"},
		{"missing CA file", server + "    certificate-authority: missing.crt", "    token: tok", "missing.crt"},
		{"CA without a certificate", server + "    certificate-authority-data: " + base64.StdEncoding.EncodeToString([]byte("junk")), "    token: tok", "no PEM certificate"},
		{"auth-provider", server, "    auth-provider: {name: gcp}", `"gcp" auth-provider is not supported`},
		{"exec plugin fails", server, "    exec: {apiVersion: client.authentication.k8s.io/v1, command: ./failing-plugin}", "exit status 3"},
		{"CA with insecure", server + "    certificate-authority: ca.crt\n    insecure-skip-tls-verify: true", "    token: tok", "insecure-skip-tls-verify is refused"},
		{"impersonation", server + "    certificate-authority: ca.crt", "    token: tok\n    as: system:admin", "impersonation"},
		{"impersonated groups", server + "    certificate-authority: ca.crt", "    token: tok\n    as-groups: [system:masters]", "impersonation"},
		{"no server", "    insecure-skip-tls-verify: true", "    token: tok", "no API server address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := version(t, Access{Kubeconfig: kubeconfig(t, dir, tc.cluster, tc.user)})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error about %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("the exec plugin's stderr reached the error: %v", err)
			}
		})
	}
	// The plugin configuration's CA and insecure together: refused, not
	// insecure (a wrong CA must never be accepted).
	err := version(t, Access{Server: srv.URL, CAFile: filepath.Join(dir, "other-ca.crt"), InsecureTLS: true, Token: "t"})
	if err == nil || !strings.Contains(err.Error(), "insecure-skip-tls-verify is refused") {
		t.Errorf("CA file with insecure: %v", err)
	}
	for name, ctx := range map[string]string{
		"user":    "{cluster: c, user: gone}",
		"cluster": "{cluster: gone, user: u}",
	} {
		p := writeFile(t, dir, "dangling-"+name, "current-context: x\ncontexts:\n- name: x\n  context: "+ctx+
			"\nclusters:\n- name: c\n  cluster: {server: \""+srv.URL+"\"}\nusers:\n- name: u\n  user: {token: t}\n", 0o600)
		if _, err := New(Access{Kubeconfig: p}); err == nil || !strings.Contains(err.Error(), name+` "gone", which it does not define`) {
			t.Errorf("context naming a missing %s: %v", name, err)
		}
	}
	missingCtx := writeFile(t, dir, "no-context", "current-context: gone\ncontexts: []\n", 0o600)
	if _, err := New(Access{Kubeconfig: missingCtx}); err == nil || !strings.Contains(err.Error(), `context "gone" not found`) {
		t.Errorf("missing context: %v", err)
	}
	bad := writeFile(t, dir, "not-yaml", "clusters: [\n", 0o600)
	if _, err := New(Access{Kubeconfig: bad}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("invalid kubeconfig: %v", err)
	}
}

// Without a kubeconfig: $KUBECONFIG's first existing file, else the pod's
// service account.
func TestCredentialsDefaultAndInCluster(t *testing.T) {
	srv := newAPIServer(t)
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	writeFile(t, dir, "ca.crt", string(srv.ca), 0o600)
	path := kubeconfig(t, dir, "    server: "+srv.URL+"\n    certificate-authority: ca.crt", "    token: from-env-kubeconfig")
	t.Setenv("KUBECONFIG", filepath.Join(dir, "absent")+string(filepath.ListSeparator)+path)
	if err := version(t, Access{}); err != nil || srv.last() != "Bearer from-env-kubeconfig" {
		t.Errorf("$KUBECONFIG: %v, %q", err, srv.last())
	}

	t.Setenv("KUBECONFIG", "")
	sa := t.TempDir()
	old := inClusterDir
	inClusterDir = sa
	t.Cleanup(func() { inClusterDir = old })
	if _, err := New(Access{}); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: %v", err)
	}
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	if _, err := New(Access{}); err == nil || !strings.Contains(err.Error(), "service account token") {
		t.Errorf("without a token: %v", err)
	}
	writeFile(t, sa, "ca.crt", string(srv.ca), 0o600)
	writeFile(t, sa, "token", "pod-token", 0o600)
	c, err := New(Access{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(context.Background()); err != nil || srv.last() != "Bearer pod-token" {
		t.Errorf("in cluster: %v, %q", err, srv.last())
	}
	// A projected token rotates: the file is read again after a minute.
	writeFile(t, sa, "token", "rotated", 0o600)
	c.auth.read = time.Now().Add(-2 * time.Minute)
	if _, err := c.Version(context.Background()); err != nil || srv.last() != "Bearer rotated" {
		t.Errorf("after rotation: %v, %q", err, srv.last())
	}
}

// Exec credential plugins: bounded by the deadline even when a child holds
// their stdout; their answer cached until its expirationTimestamp.
func TestExecCredentialBoundsAndCache(t *testing.T) {
	srv := newAPIServer(t)
	dir := t.TempDir()
	writeFile(t, dir, "ca.crt", string(srv.ca), 0o600)
	server := "    server: " + srv.URL + "\n    certificate-authority: ca.crt"
	writeFile(t, dir, "hanging-plugin", "#!/bin/sh\n(sleep 30) &\nsleep 30\n", 0o755)
	start := time.Now()
	err := version(t, Access{Kubeconfig: kubeconfig(t, dir, server, "    exec: {apiVersion: client.authentication.k8s.io/v1, command: ./hanging-plugin}"),
		ExecDeadline: time.Now().Add(time.Second)})
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || time.Since(start) > 5*time.Second {
		t.Errorf("a hanging exec plugin with its child holding stdout: %v after %s, want the deadline's error", err, time.Since(start))
	}
	count := filepath.Join(dir, "count")
	plugin := func(expiry string) {
		writeFile(t, dir, "counting-plugin", "#!/bin/sh\necho x >> "+count+"\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"status\":{\"token\":\"t\",\"expirationTimestamp\":\""+expiry+"\"}}'\n", 0o755)
	}
	runs := func() int { b, _ := os.ReadFile(count); return strings.Count(string(b), "x") }
	user := "    exec: {apiVersion: client.authentication.k8s.io/v1, command: ./counting-plugin}"
	plugin(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	kc := kubeconfig(t, dir, server, user)
	for range 3 {
		if err := version(t, Access{Kubeconfig: kc}); err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(); n != 1 {
		t.Errorf("an unexpired exec credential: the plugin ran %d times for 3 clients, want 1", n)
	}
	execCache.Lock()
	execCache.m = nil
	execCache.Unlock()
	plugin(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339))
	for range 2 {
		if err := version(t, Access{Kubeconfig: kc}); err != nil {
			t.Fatal(err)
		}
	}
	if n := runs(); n != 3 {
		t.Errorf("an expired exec credential: the plugin ran %d times in all, want 3", n)
	}
}

// $KUBECONFIG lists are merged as kubectl merges them (the first file to
// name a thing wins); ~/.kube/config serves only where allowed (kddctl).
func TestKubeconfigListsMerged(t *testing.T) {
	srv := newAPIServer(t)
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	writeFile(t, dir, "ca.crt", string(srv.ca), 0o600)
	a := writeFile(t, dir, "a", "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nusers:\n- name: u\n  user: {token: from-a}\n", 0o600)
	b := writeFile(t, dir, "b", "current-context: y\nclusters:\n- name: c\n  cluster: {server: \""+srv.URL+"\", certificate-authority: ca.crt}\nusers:\n- name: u\n  user: {token: from-b}\n", 0o600)
	list := a + string(filepath.ListSeparator) + b
	for name, access := range map[string]Access{"Access.Kubeconfig": {Kubeconfig: list}, "$KUBECONFIG": {}} {
		t.Setenv("KUBECONFIG", list)
		if err := version(t, access); err != nil || srv.last() != "Bearer from-a" {
			t.Errorf("%s list: %v, %q, want the first file's user", name, err, srv.last())
		}
	}
	t.Setenv("KUBECONFIG", "")
	if err := os.MkdirAll(filepath.Join(dir, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ".kube"), "config", "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\nclusters:\n- name: c\n  cluster: {server: \""+srv.URL+"\", certificate-authority: "+filepath.Join(dir, "ca.crt")+"}\nusers:\n- name: u\n  user: {token: from-home}\n", 0o600)
	if _, err := New(Access{}); err == nil || !strings.Contains(err.Error(), "KUBERNETES_SERVICE_HOST") {
		t.Errorf("a plugin used ~/.kube/config: %v", err)
	}
	if err := version(t, Access{HomeKubeconfig: true}); err != nil || srv.last() != "Bearer from-home" {
		t.Errorf("kddctl without ~/.kube/config: %v, %q", err, srv.last())
	}
}
