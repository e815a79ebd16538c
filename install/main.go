// Command install-cni installs kdd-cni on a node: the CNI binaries, the CNI
// kubeconfig (a TokenRequest token for the CNI identity) and the conflist.
// With SLEEP=true it stays running as a sidecar and keeps the token fresh.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kdd-cni/kdd-cni/install/internal/config"
	"github.com/kdd-cni/kdd-cni/install/internal/installer"
	"github.com/kdd-cni/kdd-cni/internal/buildinfo"
	"github.com/kdd-cni/kdd-cni/internal/kube"
	"github.com/kdd-cni/kdd-cni/internal/kubeclient"
	"github.com/kdd-cni/kdd-cni/internal/logging"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println(buildinfo.String("install-cni"))
		return
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logging.Level(os.Getenv("LOG_LEVEL"))}))
	if err := run(log); err != nil {
		log.Error("install-cni failed", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	every := time.Duration(0)
	if v := os.Getenv("CNI_TOKEN_REFRESH_INTERVAL"); v != "" {
		if every, err = time.ParseDuration(v); err != nil || every <= 0 {
			return fmt.Errorf("invalid CNI_TOKEN_REFRESH_INTERVAL=%q: want a positive duration", v)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	in := &installer.Installer{
		Cfg: cfg, Log: log, RefreshEvery: every,
		NewAPI: func() (*kubeclient.Client, error) {
			return kubeclient.New(kube.Access{Kubeconfig: cfg.Kubeconfig, UserAgent: buildinfo.String("install-cni")}, "")
		},
	}
	log.Info("starting", "version", buildinfo.Version, "hostRoot", cfg.HostRoot, "sleep", cfg.Sleep)
	return in.Run(ctx)
}
