package policywait

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestStatusFile(t *testing.T) {
	if got, want := StatusFile("default", "web-1", "eth0"), "k8s default%2Fweb-1 eth0"; got != want {
		t.Fatalf("StatusFile = %q, want %q", got, want)
	}
}

func TestWaitSeesFileCreatedLater(t *testing.T) {
	dir := t.TempDir()
	name := StatusFile("ns", "p", "eth0")
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Wait(ctx, dir, name); err != nil {
		t.Fatal(err)
	}
}

func TestWaitDirectoryCreatedLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "endpoint-status")
	name := StatusFile("ns", "p", "eth0")
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = os.MkdirAll(dir, 0o755)
		_ = os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Wait(ctx, dir, name); err != nil {
		t.Fatal(err)
	}
}

func TestWaitTimesOut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	err := Wait(ctx, t.TempDir(), "absent")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
