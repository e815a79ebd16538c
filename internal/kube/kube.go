// Package kube is the exec'd plugins' door to the Kubernetes API (the
// long-running and interactive binaries use client-go, package kubeclient).
// It loads credentials as kubectl does (kubeconfig, tokens, client
// certificates, exec plugins, in-cluster config; credentials.go) without
// linking client-go, sends plain HTTP requests and decodes only the fields
// it needs, so a plugin invocation stays small and fast. Every request
// carries its own timeout. The kubeconfig corpus test (package kubeclient)
// holds its loader to clientcmd's answers.
package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds one request.
const DefaultTimeout = 3 * time.Second

// Access says how to reach and authenticate to the API server. Empty fields
// fall back to the kubeconfig, then to the in-cluster configuration.
type Access struct {
	Kubeconfig string
	// Context is the kubeconfig context to use instead of its
	// current-context (kubectl's --context).
	Context     string
	Server      string
	Token       string
	CertFile    string
	KeyFile     string
	CAFile      string
	InsecureTLS bool
	UserAgent   string
	Timeout     time.Duration
	// HomeKubeconfig lets ~/.kube/config serve when neither Kubeconfig nor
	// $KUBECONFIG names one, as kubectl does (kddctl); never for a plugin.
	HomeKubeconfig bool
	// ExecDeadline bounds an exec credential plugin (the command's own
	// deadline), besides its 10 s limit.
	ExecDeadline time.Time
}

// Client talks to one API server.
type Client struct {
	http    *http.Client
	base    *url.URL
	ua      string
	timeout time.Duration
	caData  []byte
	auth    *auth

	mu       sync.Mutex
	requests map[string]int           // sent, by verb
	timings  map[string]time.Duration // connection set-up, by phase
	marks    map[string]time.Time     // when each traced event last happened
}

// Timings are how long the client's connection set-up took: "connect"
// (TCP) and "tls-handshake", summed over connections.
func (c *Client) Timings() map[string]time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.timings)
}

func (c *Client) addTiming(phase string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timings == nil {
		c.timings = map[string]time.Duration{}
	}
	c.timings[phase] += d
}

// Marks are when the traced events last happened: "tls-done", and per
// verb "<verb>-sent" (the whole request written, body included) and
// "<verb>-answered" (the answer's first byte), e.g. "patch-sent".
func (c *Client) Marks() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.marks)
}

func (c *Client) mark(event string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marks == nil {
		c.marks = map[string]time.Time{}
	}
	c.marks[event] = now
}

// trace times the connection set-up of a request and marks when it was
// sent and answered.
func (c *Client) trace(ctx context.Context, verb string) context.Context {
	var connect, handshake time.Time
	verb = strings.ToLower(verb)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		ConnectStart:      func(string, string) { connect = time.Now() },
		ConnectDone:       func(string, string, error) { c.addTiming("connect", time.Since(connect)) },
		TLSHandshakeStart: func() { handshake = time.Now() },
		TLSHandshakeDone: func(tls.ConnectionState, error) {
			c.addTiming("tls-handshake", time.Since(handshake))
			c.mark("tls-done")
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { c.mark(verb + "-sent") },
		GotFirstResponseByte: func() { c.mark(verb + "-answered") },
	})
}

// Requests counts the requests sent so far, by verb (answered or not).
func (c *Client) Requests() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.requests)
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
	cr, where, err := loadCredentials(a)
	if err == nil {
		var c *Client
		if c, err = cr.client(a); err == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("failed to load API credentials from %s: %w", where, err)
}

// client builds the client for resolved credentials.
func (cr *credentials) client(a Access) (*Client, error) {
	base, err := url.Parse(cr.cluster.Server)
	if err != nil || base.Host == "" {
		return nil, fmt.Errorf("invalid API server address %q", cr.cluster.Server)
	}
	tc, ca, err := cr.trust()
	if err != nil {
		return nil, err
	}
	auth, cert, err := cr.identity(ca, a.ExecDeadline)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	t, err := cr.transport(tc)
	if err != nil {
		return nil, err
	}
	c := &Client{http: &http.Client{Transport: t}, base: base, ua: a.UserAgent, timeout: a.Timeout, caData: ca, auth: auth}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	return c, nil
}

// Server is the API server URL the client talks to.
func (c *Client) Server() string { return c.base.String() }

// BearerToken is the token the client authenticates with ("" for client
// certificates and exec plugins).
func (c *Client) BearerToken() string { return c.auth.bearer() }

// CAData is the cluster CA the client trusts (PEM), if any.
func (c *Client) CAData() []byte { return c.caData }

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

// apiError is the error for a non-2xx answer whose body is data.
func apiError(code int, verb, path string, data []byte) *APIError {
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(data, &st)
	if st.Message == "" {
		st.Message = strings.TrimSpace(string(data))
	}
	return &APIError{Code: code, Verb: verb, Path: path, Message: st.Message}
}

// Transient tells whether a request failed in a way that may pass if tried
// again: no answer (connection refused, reset, timeout), 429, a 5xx, or 401
// (the token may be refreshed meanwhile).
func Transient(err error) bool {
	if untrusted(err) {
		return false // a wrong CA or server certificate does not pass by waiting
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Code == http.StatusTooManyRequests || api.Code >= 500 || api.Code == http.StatusUnauthorized
	}
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// untrusted tells whether err is the server's certificate failing
// verification.
func untrusted(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
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
	req, err := c.request(ctx, verb, path, contentType, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return c.roundTrip(req, verb, path, out)
}

// request builds a request to path (which may hold a query).
func (c *Client) request(ctx context.Context, verb, path, contentType string, body io.Reader) (*http.Request, error) {
	u := *c.base
	p, query, _ := strings.Cut(path, "?")
	u.Path, u.RawQuery = strings.TrimSuffix(u.Path, "/")+p, query
	req, err := http.NewRequestWithContext(c.trace(ctx, verb), verb, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.ua != "" {
		req.Header.Set("User-Agent", c.ua)
	}
	c.auth.apply(req)
	return req, nil
}

// roundTrip sends req and decodes a 2xx JSON body into out (if non-nil).
func (c *Client) roundTrip(req *http.Request, verb, path string, out any) error {
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
		return apiError(resp.StatusCode, verb, path, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("failed to decode answer to %s %s: %w", verb, path, err)
	}
	return nil
}
