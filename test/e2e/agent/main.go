// Command agent is the end-to-end tests' only container image program. With
// no arguments it waits for SIGTERM (the pod sandbox, "pause"); with
// "serve" it answers HTTP on :8080 with its hostname and, on
// /probe?addr=HOST:PORT, fetches that address and returns what it got (so a
// test on the node can check pod-to-pod traffic without kubectl exec). With
// FIRST_PROBE=HOST:PORT it first tries that address once, before serving,
// and reports the outcome on /first ("reached" or "blocked: …"): the pod's
// very first packet.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
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
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ListenAndServe() }()
	<-stop
	_ = srv.Close()
}
