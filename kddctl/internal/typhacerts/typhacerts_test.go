package typhacerts

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func parse(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGenerateChains(t *testing.T) {
	now := time.Now()
	b, err := Generate(now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parse(t, b.CA))
	for _, c := range []struct {
		pair  Pair
		cn    string
		usage x509.ExtKeyUsage
	}{{b.Server, ServerCN, x509.ExtKeyUsageServerAuth}, {b.Client, ClientCN, x509.ExtKeyUsageClientAuth}} {
		cert := parse(t, c.pair.Cert)
		if cert.Subject.CommonName != c.cn {
			t.Errorf("CN %q, want %q", cert.Subject.CommonName, c.cn)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s does not chain to the CA: %v", c.cn, err)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now.Add(25 * time.Hour)}); err == nil {
			t.Errorf("%s valid past its lifetime", c.cn)
		}
	}
	if _, err := Generate(now, time.Minute); err == nil {
		t.Error("a one-minute validity accepted")
	}
}

// handshake runs a TLS handshake between a server that, as Typha does,
// requires a client certificate from the CA, and a client presenting
// cert (none if nil) that, as Felix does, trusts only the CA.
func handshake(t *testing.T, srv Bundle, client *Pair, clientCA []byte) error {
	t.Helper()
	serverCert, err := tls.X509KeyPair(srv.Server.Cert, srv.Server.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CA)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		err = conn.(*tls.Conn).Handshake()
		conn.Close()
		done <- err
	}()
	cp := x509.NewCertPool()
	cp.AppendCertsFromPEM(clientCA)
	cfg := &tls.Config{RootCAs: cp, ServerName: ServerCN}
	if client != nil {
		cc, err := tls.X509KeyPair(client.Cert, client.Key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cc}
	}
	conn, err := net.DialTimeout("tcp", l.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(conn, cfg)
	cerr := c.Handshake()
	if cerr == nil {
		_, cerr = c.Read(make([]byte, 1)) // TLS 1.3: the refusal comes after
	}
	serr := <-done
	if serr != nil {
		return serr
	}
	if cerr != nil && !strings.Contains(cerr.Error(), "EOF") && !strings.Contains(cerr.Error(), "closed") {
		return cerr
	}
	return nil
}

func TestMutualTLS(t *testing.T) {
	b, err := Generate(time.Now(), time.Hour*2)
	if err != nil {
		t.Fatal(err)
	}
	other, err := Generate(time.Now(), time.Hour*2)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, b, &b.Client, b.CA); err != nil {
		t.Errorf("the bundle's own client refused: %v", err)
	}
	if err := handshake(t, b, nil, b.CA); err == nil {
		t.Error("a client without a certificate accepted")
	}
	if err := handshake(t, b, &other.Client, b.CA); err == nil {
		t.Error("a client certificate of another CA accepted")
	}
	if err := handshake(t, b, &b.Client, other.CA); err == nil {
		t.Error("the client trusted a server of another CA")
	}
}

func TestManifest(t *testing.T) {
	b, err := Generate(time.Now(), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Manifest(b, "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(out, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	want := map[string]map[string][]byte{
		TyphaSecret: {"ca.crt": b.CA, "tls.crt": b.Server.Cert, "tls.key": b.Server.Key},
		FelixSecret: {"ca.crt": b.CA, "tls.crt": b.Client.Cert, "tls.key": b.Client.Key, "typha-cn": []byte(ServerCN)},
	}
	for _, doc := range docs {
		var s corev1.Secret
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			t.Fatalf("unparsable Secret: %v\n%s", err, doc)
		}
		w, ok := want[s.Name]
		if !ok || s.Namespace != "kube-system" || s.Type != corev1.SecretTypeTLS {
			t.Fatalf("unexpected Secret %s/%s type %s", s.Namespace, s.Name, s.Type)
		}
		if len(s.Data) != len(w) {
			t.Errorf("%s: keys %v", s.Name, s.Data)
		}
		for k, v := range w {
			if !bytes.Equal(s.Data[k], v) {
				t.Errorf("%s: %s differs", s.Name, k)
			}
		}
		delete(want, s.Name)
	}
}
