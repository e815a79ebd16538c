// Package kube is kdd-cni's only door to the Kubernetes API. It loads
// credentials with client-go (kubeconfig, tokens, client certificates, exec
// plugins, in-cluster config) but sends plain HTTP requests and decodes only
// the fields it needs, so a plugin invocation stays small and fast. Every
// request carries its own timeout.
package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// DefaultTimeout bounds one request.
const DefaultTimeout = 3 * time.Second

// Access says how to reach and authenticate to the API server. Empty fields
// fall back to the kubeconfig, then to the in-cluster configuration.
type Access struct {
	Kubeconfig  string
	Server      string
	Token       string
	CertFile    string
	KeyFile     string
	CAFile      string
	InsecureTLS bool
	UserAgent   string
	Timeout     time.Duration
}

// Client talks to one API server.
type Client struct {
	http    *http.Client
	base    *url.URL
	ua      string
	timeout time.Duration
	caData  []byte
	token   string

	mu       sync.Mutex
	requests map[string]int           // sent, by verb
	timings  map[string]time.Duration // connection set-up, by phase
}

// Timings are how long the client's connection set-up took: "connect"
// (TCP) and "tls-handshake", summed over connections.
func (c *Client) Timings() map[string]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Duration, len(c.timings))
	for k, d := range c.timings {
		out[k] = d
	}
	return out
}

func (c *Client) addTiming(phase string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timings == nil {
		c.timings = map[string]time.Duration{}
	}
	c.timings[phase] += d
}

// trace times the connection set-up of a request.
func (c *Client) trace(ctx context.Context) context.Context {
	var connect, handshake time.Time
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectStart:      func(string, string) { connect = time.Now() },
		ConnectDone:       func(string, string, error) { c.addTiming("connect", time.Since(connect)) },
		TLSHandshakeStart: func() { handshake = time.Now() },
		TLSHandshakeDone:  func(tls.ConnectionState, error) { c.addTiming("tls-handshake", time.Since(handshake)) },
	})
}

// Requests counts the requests sent so far, by verb (answered or not).
func (c *Client) Requests() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.requests))
	for v, n := range c.requests {
		out[v] = n
	}
	return out
}

func (c *Client) count(verb string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.requests == nil {
		c.requests = map[string]int{}
	}
	c.requests[verb]++
}

// New builds a client; it makes no request.
func New(a Access) (*Client, error) {
	cfg, err := restConfig(a)
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to build API client: %w", err)
	}
	base, err := url.Parse(cfg.Host)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("invalid API server address %q", cfg.Host)
	}
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("failed to read CA file: %w", err)
		}
	}
	token := cfg.BearerToken
	if token == "" && cfg.BearerTokenFile != "" {
		if b, err := os.ReadFile(cfg.BearerTokenFile); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	c := &Client{http: hc, base: base, ua: a.UserAgent, timeout: a.Timeout, caData: ca, token: token}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c, nil
}

// Server is the API server URL the client talks to.
func (c *Client) Server() string { return c.base.String() }

// BearerToken is the token the client authenticates with ("" for client
// certificates and exec plugins).
func (c *Client) BearerToken() string { return c.token }

// CAData is the cluster CA the client trusts (PEM), if any.
func (c *Client) CAData() []byte { return c.caData }

func restConfig(a Access) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if a.Kubeconfig != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: a.Kubeconfig}
	}
	overrides := &clientcmd.ConfigOverrides{
		ClusterInfo: clientcmdapi.Cluster{Server: a.Server, CertificateAuthority: a.CAFile, InsecureSkipTLSVerify: a.InsecureTLS},
		AuthInfo:    clientcmdapi.AuthInfo{Token: a.Token, ClientCertificate: a.CertFile, ClientKey: a.KeyFile},
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		where := a.Kubeconfig
		if where == "" {
			where = "the default kubeconfig or in-cluster config"
		}
		return nil, fmt.Errorf("failed to load API credentials from %s: %w", where, err)
	}
	return cfg, nil
}

// APIError is a non-2xx answer from the API server.
type APIError struct {
	Code    int
	Verb    string
	Path    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Verb, e.Path, e.Code, http.StatusText(e.Code), e.Message)
}

// Sentinels callers branch on, matched with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrInvalid is 422: for a JSON patch, a failed "test" operation.
	ErrInvalid = errors.New("unprocessable")
	// ErrUnauthorized is 401: the credentials were not accepted.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden is 403: the identity may not do this.
	ErrForbidden = errors.New("forbidden")
)

// Transient tells whether a request failed in a way that may pass if tried
// again: no answer (connection refused, reset, timeout), 429, a 5xx, or 401
// (the token may be refreshed meanwhile).
func Transient(err error) bool {
	var api *APIError
	if errors.As(err, &api) {
		return api.Code == http.StatusTooManyRequests || api.Code >= 500 || api.Code == http.StatusUnauthorized
	}
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// Definitive tells whether a failed request certainly changed nothing: the
// API server answered with a 4xx. Without an answer, or with a 5xx, a write
// may have been applied, or may still be.
func Definitive(err error) bool {
	var api *APIError
	return errors.As(err, &api) && api.Code >= 400 && api.Code < 500
}

// Is maps status codes to the sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrInvalid:
		return e.Code == http.StatusUnprocessableEntity
	case ErrUnauthorized:
		return e.Code == http.StatusUnauthorized
	case ErrForbidden:
		return e.Code == http.StatusForbidden
	}
	return false
}

// do sends one request and decodes a 2xx JSON body into out (if non-nil).
func (c *Client) do(ctx context.Context, verb, path, contentType string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	p, query, _ := strings.Cut(path, "?")
	u.Path, u.RawQuery = strings.TrimSuffix(u.Path, "/")+p, query
	req, err := http.NewRequestWithContext(c.trace(ctx), verb, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	c.count(verb)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("failed to %s %s: %w", verb, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("failed to read answer to %s %s: %w", verb, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var st struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &st)
		if st.Message == "" {
			st.Message = strings.TrimSpace(string(data))
		}
		return &APIError{Code: resp.StatusCode, Verb: verb, Path: path, Message: st.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("failed to decode answer to %s %s: %w", verb, path, err)
	}
	return nil
}
