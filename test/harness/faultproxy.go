package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the proxy does to a request (one of the fields; Rate says
// how often, 0 meaning always).
type Fault struct {
	Delay  time.Duration // answer late
	Status int           // answer this HTTP status instead of forwarding
	Drop   bool          // close the connection without an answer
	Hang   bool          // never answer (until the client gives up)
	Rate   float64       // probability in (0,1]; 0 = every request
	// Method limits the fault to requests of that method ("" = all).
	Method string
	// Detach forwards a delayed request even if its client is gone (as a
	// request stuck in the network would still reach the server later).
	Detach bool
}

func (f Fault) String() string {
	switch {
	case f.Drop:
		return "drop"
	case f.Hang:
		return "hang"
	case f.Status != 0:
		return fmt.Sprintf("http-%d", f.Status)
	case f.Delay != 0:
		return "delay-" + f.Delay.String()
	}
	return "none"
}

// FaultProxy is an HTTPS reverse proxy in front of the apiserver, inside
// the node namespace, that injects faults. Credentials pass through.
type FaultProxy struct {
	URL    string
	srv    *http.Server
	fault  atomic.Pointer[Fault]
	mu     sync.Mutex
	counts map[string]int
}

// StartFaultProxy listens on 127.0.0.1:port in the node namespace.
func (cp *ControlPlane) StartFaultProxy(port int) (*FaultProxy, error) {
	certFile, keyFile, err := cp.pki.issue(fmt.Sprintf("proxy-%d", port), "kdd-cni-fault-proxy", nil,
		[]net.IP{net.ParseIP("127.0.0.1")}, nil, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	cp.launcher.run(func() { ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)) })
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the fault proxy: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.CAPEM)
	target, _ := url.Parse(cp.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	quiet := log.New(io.Discard, "", 0)
	rp.ErrorLog = quiet
	rp.Transport = &http.Transport{DialContext: cp.launcher.dial, TLSClientConfig: &tls.Config{RootCAs: pool}}
	p := &FaultProxy{URL: fmt.Sprintf("https://127.0.0.1:%d", port), counts: map[string]int{}}
	p.fault.Store(&Fault{})
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f := *p.fault.Load()
		if (f.Rate > 0 && rand.Float64() >= f.Rate) || (f.Method != "" && f.Method != r.Method) {
			f = Fault{}
		}
		p.mu.Lock()
		p.counts[f.String()]++
		p.mu.Unlock()
		switch {
		case f.Drop:
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		case f.Hang:
			<-r.Context().Done()
			return
		case f.Status != 0:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.Status)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected fault %d","code":%d}`, f.Status, f.Status)
			return
		case f.Delay != 0 && f.Detach:
			body, _ := io.ReadAll(r.Body)
			time.Sleep(f.Delay)
			late := r.Clone(context.WithoutCancel(r.Context()))
			late.Body = io.NopCloser(bytes.NewReader(body))
			rp.ServeHTTP(discardingWriter{h: http.Header{}}, late)
			return
		case f.Delay != 0:
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ErrorLog: quiet}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// discardingWriter takes a response nobody waits for any more.
type discardingWriter struct{ h http.Header }

func (d discardingWriter) Header() http.Header         { return d.h }
func (d discardingWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d discardingWriter) WriteHeader(int)             {}

// Set changes the fault for the next requests.
func (p *FaultProxy) Set(f Fault) { p.fault.Store(&f) }

// Counts reports how many requests met each fault.
func (p *FaultProxy) Counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// Close stops the proxy.
func (p *FaultProxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	return p.srv.Close()
}

// KubeconfigVia rewrites a token kubeconfig to go through server.
func (cp *ControlPlane) KubeconfigVia(src, server string) (string, error) {
	cfg, err := loadKubeconfig(src)
	if err != nil {
		return "", err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	path := filepath.Join(cp.Dir, fmt.Sprintf("via-%d.kubeconfig", time.Now().UnixNano()))
	return path, writeKubeconfigFile(cfg, path)
}
