package integration

import (
	"net"
	"net/http"
	"sync/atomic"
)

// httpGate answers 503 until ready is closed, then 200.
type httpGate struct {
	ready chan struct{}
	hits  atomic.Int64
}

func (g *httpGate) serve(ln net.Listener) {
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		g.hits.Add(1)
		select {
		case <-g.ready:
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
}
