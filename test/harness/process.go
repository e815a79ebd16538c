package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is a long-running child (etcd, kube-apiserver, ...) started by the
// harness. It is stopped by PID only.
type Process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

func startProcess(l *launcher, dir, name, bin string, args ...string) (*Process, error) {
	return startCmd(l, dir, name, exec.Command(bin, args...))
}

// startCmd starts a prepared command (environment, SysProcAttr) as a Process.
func startCmd(l *launcher, dir, name string, cmd *exec.Cmd) (*Process, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Dir = dir
	if err := l.start(cmd, true); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("failed to start %s: %w", name, err)
	}
	logFile.Close() // the child holds its own descriptor
	p := &Process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// PID of the child.
func (p *Process) PID() int { return p.cmd.Process.Pid }

func (p *Process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *Process) Stop(grace time.Duration) error { return p.stop(grace) }

// Running reports whether the process is alive.
func (p *Process) Running() bool { return p.running() }

// Tail returns the last n bytes of the process log.
func (p *Process) Tail(n int) string { return p.tail(n) }

func (p *Process) stop(grace time.Duration) error {
	if !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.PID())
		}
	}
	return nil
}

// tail returns the last n bytes of the Process log.
func (p *Process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

var errExited = errors.New("Process exited")

// exitError describes an early exit with the end of the log.
func (p *Process) exitError() error {
	return fmt.Errorf("%w: %s: %v\n%s", errExited, p.name, p.waitErr, p.tail(2000))
}
