// Command agent is the end-to-end tests' only container image program. With
// no arguments it waits for SIGTERM (the pod sandbox, "pause"); with
// "serve" it answers HTTP on :8080 with its hostname and, on
// /probe?addr=HOST:PORT, fetches that address and returns what it got (so a
// test on the node can check pod-to-pod traffic without kubectl exec). With
// FIRST_PROBE=HOST:PORT it first tries that address once, before serving,
// and reports the outcome on /first ("reached" or "blocked: …"): the pod's
// very first packet.
//
// For QoS checks it also moves bounded amounts of data and holds
// connections: /bytes?n=N serves N bytes and /sink swallows a POST body;
// /pull?addr=HOST:PORT&n=N fetches N bytes from that agent (data into this
// pod) and /push?addr=HOST:PORT&n=N posts N bytes to it (data out of this
// pod), each answering "<bytes> <seconds>"; /hold?addr=HOST:PORT&n=N opens N
// TCP connections to that address at once, keeps them all open, and answers
// "connected <c> refused <r>".
//
// For MTU checks, /ping?addr=IP&size=N sends ICMP echoes of N-byte IPv4
// packets with don't-fragment set and answers "ok", or why not (dfPing).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		<-stop
		return
	}
	host, _ := os.Hostname()
	first := "no probe"
	if addr := os.Getenv("FIRST_PROBE"); addr != "" {
		first = "reached"
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			first = "blocked: " + err.Error()
		} else {
			c.Close()
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("size"))
		if err := dfPing(r.URL.Query().Get("addr"), size, 3*time.Second); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/first", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, first) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "hello from %s", host) })
	// A new connection per probe: a kept-alive one would be an established
	// flow, which NetworkPolicy changes do not cut.
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	mux.HandleFunc("/probe", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get("http://" + r.URL.Query().Get("addr") + "/")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%s via %s", b, host)
	})
	transfers(mux)
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	<-stop
	_ = srv.Close()
}

// transfers adds the bounded data transfers and the connection holder.
func transfers(mux *http.ServeMux) {
	// sized handles a request whose n parameter is a byte or connection count.
	sized := func(path string, h func(w http.ResponseWriter, r *http.Request, n int64)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			h(w, r, n)
		})
	}
	bulk := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	sized("/bytes", func(w http.ResponseWriter, _ *http.Request, n int64) {
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.CopyN(w, zeros{}, n)
	})
	mux.HandleFunc("/sink", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, n)
	})
	sized("/pull", func(w http.ResponseWriter, r *http.Request, n int64) {
		start := time.Now()
		resp, err := bulk.Get(fmt.Sprintf("http://%s/bytes?n=%d", r.URL.Query().Get("addr"), n))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%d %.6f", got, time.Since(start).Seconds())
	})
	sized("/push", func(w http.ResponseWriter, r *http.Request, n int64) {
		start := time.Now()
		resp, err := bulk.Post("http://"+r.URL.Query().Get("addr")+"/sink", "application/octet-stream", io.LimitReader(zeros{}, n))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("sink: %s %s %v", resp.Status, b, err), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "%s %.6f", bytes.TrimSpace(b), time.Since(start).Seconds())
	})
	sized("/hold", func(w http.ResponseWriter, r *http.Request, n int64) {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		refused := 0
		for range n {
			c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
			switch {
			case err == nil:
				held = append(held, c)
			case errors.Is(err, syscall.ECONNREFUSED):
				refused++
			default:
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
		}
		fmt.Fprintf(w, "connected %d refused %d", len(held), refused)
	})
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
