package kubeclient

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
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/kube"
)

// TestKubeconfigCorpus loads each kubeconfig of a corpus with the plugins'
// loader (package kube) and with clientcmd (this package), sends one
// request with each to a TLS server and compares what the server saw: the
// credentials (Authorization, client certificate), the TLS server name,
// whether the request came through the proxy, and whether the connection
// was made at all. Where the plugins' loader refuses a form, the refusal
// must say why.
func TestKubeconfigCorpus(t *testing.T) {
	w := newWorld(t)
	cases := []struct {
		name  string
		files map[string]string // name → contents; {{server}}, {{proxy}}, {{ca-data}} ... replaced
		env   string            // $KUBECONFIG (file names, ':'-separated)
		a     kube.Access       // Kubeconfig is relative to the case's directory
		// refused: the plugins' loader refuses the form, with this in its error.
		refused string
		// fails: both fail to talk to the server (an untrusted certificate).
		fails bool
	}{
		{name: "token and inline CA", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "token: tok-inline")}},
		{name: "relative CA file and token file", a: kube.Access{Kubeconfig: "sub/k"},
			files: map[string]string{"sub/k": config("{{server}}", "certificate-authority: ../ca.pem", "tokenFile: tok"),
				"ca.pem": "{{ca-pem}}", "sub/tok": "tok-from-file\n"}},
		{name: "relative client certificate files", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority: ca.pem", "client-certificate: crt.pem\n    client-key: key.pem"),
				"ca.pem": "{{ca-pem}}", "crt.pem": "{{client-crt}}", "key.pem": "{{client-key}}"}},
		{name: "inline client certificate", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}",
				"client-certificate-data: {{client-crt-data}}\n    client-key-data: {{client-key-data}}")}},
		{name: "basic auth", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "username: u\n    password: p")}},
		{name: "tls-server-name", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}\n    tls-server-name: apiserver.test", "token: t")}},
		{name: "insecure-skip-tls-verify", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "insecure-skip-tls-verify: true", "token: t")}},
		{name: "no CA: untrusted", a: kube.Access{Kubeconfig: "k"}, fails: true,
			files: map[string]string{"k": config("{{server}}", "", "token: t")}},
		{name: "proxy-url", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}\n    proxy-url: {{proxy}}", "token: t")}},
		{name: "exec credential plugin", a: kube.Access{Kubeconfig: "k"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}",
				"exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {{dir}}/cred.sh\n      interactiveMode: Never"),
				"cred.sh": "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"tok-exec\"}}'\n"}},
		{name: "$KUBECONFIG list merged, first wins, missing skipped", env: "missing:a:b",
			files: map[string]string{
				"a": "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: s, user: u}\n" +
					"clusters:\n- name: s\n  cluster:\n    server: {{server}}\n    certificate-authority-data: {{ca-data}}\n",
				"b": "apiVersion: v1\nkind: Config\ncurrent-context: other\ncontexts:\n- name: c\n  context: {cluster: nowhere, user: nobody}\n" +
					"users:\n- name: u\n  user:\n    token: tok-from-b\n"}},
		{name: "context chosen (--context)", a: kube.Access{Kubeconfig: "k", Context: "second"},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "token: first") +
				"- name: second\n  context: {cluster: s, user: u2}\n"}},
		{name: "seed overrides: server, token, CA file", a: kube.Access{Kubeconfig: "k", Server: "{{server}}", Token: "tok-override", CAFile: "{{dir}}/ca.pem"},
			files: map[string]string{"k": config("https://192.0.2.1:1", "", "token: replaced"), "ca.pem": "{{ca-pem}}"}},
		{name: "insecure override clears the kubeconfig's CA", a: kube.Access{Kubeconfig: "k", InsecureTLS: true},
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{wrong-ca-data}}", "token: t")}},
		{name: "CA beside insecure-skip-tls-verify", a: kube.Access{Kubeconfig: "k"}, refused: "insecure-skip-tls-verify",
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}\n    insecure-skip-tls-verify: true", "token: t")}},
		{name: "explicit kubeconfig missing", a: kube.Access{Kubeconfig: "nothing-here"}, refused: "nothing-here"},
		{name: "auth-provider", a: kube.Access{Kubeconfig: "k"}, refused: "auth-provider",
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "auth-provider:\n      name: oidc")}},
		{name: "impersonation", a: kube.Access{Kubeconfig: "k"}, refused: "impersonation",
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "token: t\n    as: someone-else")}},
		{name: "context naming a missing user", a: kube.Access{Kubeconfig: "k", Context: "broken"}, refused: "nobody",
			files: map[string]string{"k": config("{{server}}", "certificate-authority-data: {{ca-data}}", "token: t") +
				"- name: broken\n  context: {cluster: s, user: nobody}\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tc.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(w.fill(body, dir)), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			a := tc.a
			a.Timeout = 5 * time.Second
			a.Server, a.CAFile = w.fill(a.Server, dir), w.fill(a.CAFile, dir)
			if a.Kubeconfig != "" {
				a.Kubeconfig = filepath.Join(dir, a.Kubeconfig)
			}
			var env []string
			for _, f := range strings.Split(tc.env, ":") {
				if f != "" {
					env = append(env, filepath.Join(dir, f))
				}
			}
			t.Setenv("KUBECONFIG", strings.Join(env, ":"))

			ours, oursErr := w.viaPlugins(a)
			theirs, theirsErr := w.viaClientcmd(a)
			t.Logf("plugins: %+v %v", ours, oursErr)
			t.Logf("clientcmd: %+v %v", theirs, theirsErr)
			switch {
			case tc.refused != "":
				if oursErr == nil || !strings.Contains(oursErr.Error(), tc.refused) {
					t.Errorf("the plugins' loader: %v, want a refusal naming %q", oursErr, tc.refused)
				}
			case tc.fails:
				if oursErr == nil || theirsErr == nil {
					t.Errorf("want both to fail: plugins %v, clientcmd %v", oursErr, theirsErr)
				}
			case oursErr != nil || theirsErr != nil:
				t.Errorf("plugins: %v; clientcmd: %v", oursErr, theirsErr)
			case ours != theirs:
				t.Errorf("the server saw different requests:\nplugins   %+v\nclientcmd %+v", ours, theirs)
			case ours.auth == "" && ours.clientCN == "":
				t.Errorf("no credentials reached the server: %+v", ours)
			}
		})
	}
}

// config is a kubeconfig whose current context c names cluster s and user
// u (a second user u2 has token "second"); the contexts list is last, so a
// case can add a context by appending it.
func config(server, cluster, user string) string {
	return "apiVersion: v1\nkind: Config\ncurrent-context: c\n" +
		"clusters:\n- name: s\n  cluster:\n    server: " + server + "\n    " + cluster + "\n" +
		"users:\n- name: u\n  user:\n    " + user + "\n- name: u2\n  user:\n    token: second\n" +
		"contexts:\n- name: c\n  context: {cluster: s, user: u}\n"
}

// seen is what the server saw of one request.
type seen struct {
	auth       string // the Authorization header
	clientCN   string // the client certificate's subject
	serverName string // the TLS server name (SNI)
	proxied    bool   // it came through the proxy
}

type world struct {
	server, proxy        string
	caPEM, wrongCAPEM    []byte
	clientCrt, clientKey []byte
	mu                   sync.Mutex
	last                 *seen
	proxiedConns         map[string]bool // remote addresses the proxy dialled from
}

func (w *world) fill(s, dir string) string {
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	return strings.NewReplacer("{{server}}", w.server, "{{proxy}}", w.proxy, "{{dir}}", dir,
		"{{ca-pem}}", string(w.caPEM), "{{ca-data}}", b64(w.caPEM), "{{wrong-ca-data}}", b64(w.wrongCAPEM),
		"{{client-crt}}", string(w.clientCrt), "{{client-key}}", string(w.clientKey),
		"{{client-crt-data}}", b64(w.clientCrt), "{{client-key-data}}", b64(w.clientKey)).Replace(s)
}

// observe runs one request and returns what the server saw of it.
func (w *world) observe(request func(context.Context) error) (seen, error) {
	w.mu.Lock()
	w.last = nil
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := request(ctx); err != nil {
		return seen{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		return seen{}, io.ErrUnexpectedEOF
	}
	return *w.last, nil
}

func (w *world) viaPlugins(a kube.Access) (seen, error) {
	c, err := kube.New(a)
	if err != nil {
		return seen{}, err
	}
	return w.observe(func(ctx context.Context) error { _, err := c.Version(ctx); return err })
}

func (w *world) viaClientcmd(a kube.Access) (seen, error) {
	c, err := New(a, "")
	if err != nil {
		return seen{}, err
	}
	return w.observe(func(context.Context) error { _, err := c.Discovery().ServerVersion(); return err })
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{proxiedConns: map[string]bool{}}
	ca, caKey, caPEM := newCert(t, "corpus-ca", nil, nil, true)
	w.caPEM = caPEM
	_, _, w.wrongCAPEM = newCert(t, "wrong-ca", nil, nil, true)
	srvCert, srvKey, _ := newCert(t, "apiserver.test", ca, caKey, false)
	clientCert, clientKey, clientPEM := newCert(t, "corpus-user", ca, caKey, false)
	w.clientCrt = clientPEM
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	w.clientKey = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	_ = clientCert
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s := seen{auth: r.Header.Get("Authorization"), serverName: r.TLS.ServerName}
		if len(r.TLS.PeerCertificates) > 0 {
			s.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		w.mu.Lock()
		s.proxied = w.proxiedConns[r.RemoteAddr]
		w.last = &s
		w.mu.Unlock()
		rw.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(rw, `{"major":"1","minor":"37","gitVersion":"v1.37.2"}`)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	w.server = srv.URL

	// A CONNECT proxy that notes the local address of each tunnel it dials.
	proxy := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(rw, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		w.mu.Lock()
		w.proxiedConns[up.LocalAddr().String()] = true
		w.mu.Unlock()
		conn, buf, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			up.Close()
			return
		}
		_, _ = conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() { _, _ = io.Copy(up, buf); up.Close() }()
		go func() { _, _ = io.Copy(conn, up); conn.Close() }()
	}))
	t.Cleanup(proxy.Close)
	w.proxy = proxy.URL
	return w
}

// newCert makes a certificate for name (a CA when ca is true) signed by
// parent (self-signed when nil), valid for name and 127.0.0.1.
func newCert(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ca bool) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        ca, BasicConstraintsValid: true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
