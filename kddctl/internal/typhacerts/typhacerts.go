// Package typhacerts makes the credentials Felix and Typha authenticate
// each other with: a CA of their own, Typha's server certificate (common
// name ServerCN) and Felix's client certificate (ClientCN), each signed by
// that CA, as the two Secrets the manifests mount.
package typhacerts

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"text/template"
	"time"
)

// The names the manifests pin: Felix accepts only a server named ServerCN
// (FELIX_TYPHACN), Typha only a client named ClientCN (TYPHA_CLIENTCN).
const (
	ServerCN = "typha-server"
	ClientCN = "typha-client"
)

// The Secrets the manifests mount (conf/manifests/typha.yaml, calico-node.yaml).
const (
	TyphaSecret = "calico-typha-tls"
	FelixSecret = "calico-felix-typha-tls"
)

// Pair is a certificate and its private key, PEM-encoded.
type Pair struct{ Cert, Key []byte }

// Bundle is a new CA and the two certificates it signed.
type Bundle struct {
	CA             []byte // PEM
	Server, Client Pair
}

// Generate makes a CA and the server and client certificates, valid from
// now for validFor (the CA for as long).
func Generate(now time.Time, validFor time.Duration) (Bundle, error) {
	if validFor < time.Hour {
		return Bundle{}, fmt.Errorf("failed to make certificates: validity %s is under an hour", validFor)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Bundle{}, fmt.Errorf("failed to make the CA key: %w", err)
	}
	caTmpl, err := template509(now, validFor, "kdd-cni-typha-ca")
	if err != nil {
		return Bundle{}, err
	}
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caTmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Bundle{}, fmt.Errorf("failed to sign the CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Bundle{}, fmt.Errorf("failed to parse the CA: %w", err)
	}
	b := Bundle{CA: pemBlock("CERTIFICATE", caDER)}
	if b.Server, err = leaf(now, validFor, ServerCN, x509.ExtKeyUsageServerAuth, ca, caKey); err != nil {
		return Bundle{}, err
	}
	if b.Client, err = leaf(now, validFor, ClientCN, x509.ExtKeyUsageClientAuth, ca, caKey); err != nil {
		return Bundle{}, err
	}
	return b, nil
}

func template509(now time.Time, validFor time.Duration, cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("failed to make a serial number: %w", err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-5 * time.Minute), // clock skew between nodes
		NotAfter:     now.Add(validFor),
	}, nil
}

func leaf(now time.Time, validFor time.Duration, cn string, usage x509.ExtKeyUsage, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, fmt.Errorf("failed to make the %s key: %w", cn, err)
	}
	tmpl, err := template509(now, validFor, cn)
	if err != nil {
		return Pair{}, err
	}
	tmpl.DNSNames = []string{cn} // for verifiers that ignore the CN
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return Pair{}, fmt.Errorf("failed to sign the %s certificate: %w", cn, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, fmt.Errorf("failed to encode the %s key: %w", cn, err)
	}
	return Pair{Cert: pemBlock("CERTIFICATE", der), Key: pemBlock("PRIVATE KEY", keyDER)}, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

var manifest = template.Must(template.New("secrets").Funcs(template.FuncMap{"b64": base64.StdEncoding.EncodeToString}).Parse(
	`# Made by kddctl typha-certs: Typha's and Felix's mutual-TLS credentials
# (typha-cn: the name Felix requires of Typha's certificate, FELIX_TYPHACN).
# Apply with kubectl apply -f -; running it again rotates them (restart
# calico-typha and calico-node to load the new ones).
{{- range $i, $s := .Secrets}}
{{- if $i}}
---{{end}}
apiVersion: v1
kind: Secret
metadata:
  name: {{$s.Name}}
  namespace: {{$.Namespace}}
  labels:
    k8s-app: {{$s.App}}
type: kubernetes.io/tls
data:
{{- range $s.Data}}
  {{.Key}}: {{b64 .Value}}
{{- end}}
{{- end}}
`))

type secret struct {
	Name, App string
	Data      []entry
}

type entry struct {
	Key   string
	Value []byte
}

// Manifest renders b as the two Secrets in namespace.
func Manifest(b Bundle, namespace string) ([]byte, error) {
	secrets := []secret{
		{TyphaSecret, "calico-typha", []entry{{"ca.crt", b.CA}, {"tls.crt", b.Server.Cert}, {"tls.key", b.Server.Key}}},
		{FelixSecret, "calico-node", []entry{{"ca.crt", b.CA}, {"tls.crt", b.Client.Cert}, {"tls.key", b.Client.Key}, {"typha-cn", []byte(ServerCN)}}},
	}
	var out bytes.Buffer
	err := manifest.Execute(&out, struct {
		Namespace string
		Secrets   []secret
	}{namespace, secrets})
	if err != nil {
		return nil, fmt.Errorf("failed to render the Secrets: %w", err)
	}
	return out.Bytes(), nil
}
