package kube

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Error mapping only; behaviour against a real apiserver is tested in test/.
func TestErrorMapping(t *testing.T) {
	codes := map[string]int{"/404": 404, "/401": 401, "/403": 403, "/409": 409, "/422": 422, "/500": 500}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow/version" {
			time.Sleep(300 * time.Millisecond)
		}
		code := codes[strings.TrimSuffix(r.URL.Path, "/version")]
		if code == 0 {
			_, _ = w.Write([]byte(`{"gitVersion":"v1.37.2"}`))
			return
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"kind":"Status","message":"the message"}`))
	}))
	defer srv.Close()
	for path, want := range map[string]error{"/404": ErrNotFound, "/422": ErrInvalid} {
		c, err := New(Access{Server: srv.URL + path, Token: "x"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Version(context.Background())
		if !errors.Is(err, want) || !strings.Contains(err.Error(), "the message") {
			t.Errorf("%s: got %v, want %v", path, err, want)
		}
	}
	c, _ := New(Access{Server: srv.URL + "/500"})
	if _, err := c.Version(context.Background()); errors.Is(err, ErrNotFound) || err == nil {
		t.Errorf("500 mapped to %v", err)
	}
	c, _ = New(Access{Server: srv.URL + "/slow", Timeout: 50 * time.Millisecond})
	if _, err := c.Version(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout not applied: %v", err)
	}
	if _, err := New(Access{Kubeconfig: "/nonexistent/kubeconfig"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	jwt := func(payload string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
	}
	if exp, ok := TokenExpiry(jwt(`{"exp":1700000000,"sub":"x"}`)); !ok || exp.Unix() != 1700000000 {
		t.Errorf("exp %v %v", exp, ok)
	}
	for _, tok := range []string{"", "opaque-token", jwt(`{"sub":"x"}`), jwt(`not json`), "a.!!!.c"} {
		if _, ok := TokenExpiry(tok); ok {
			t.Errorf("%q: expiry read from a token without one", tok)
		}
	}
}
