package ipamexec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// boundedExec runs a plugin so that the command's deadline really bounds
// it: the plugin runs in its own process group, the whole group is killed
// when ctx ends, and output pipes held open by a straggler are cut after
// a second. (The library's executor kills only the plugin itself and then
// waits for every process that inherited its stdout.) The plugin also dies
// with kdd-cni (Pdeathsig): a host-local orphaned by a killed ADD would
// otherwise allocate after the runtime's DEL had released, and leak.
type boundedExec struct {
	invoke.RawExec
	version.PluginDecoder
}

func (*boundedExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, pluginPath)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second
	err := c.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("killed %s at the command's deadline: %w", pluginPath, ctx.Err())
	}
	msg := types.Error{}
	switch {
	case stdout.Len() > 0 && json.Unmarshal(stdout.Bytes(), &msg) == nil && msg.Msg != "":
		if msg.Code == 0 {
			msg.Code = types.ErrInternal
		}
		return nil, &msg
	case stderr.Len() > 0:
		return nil, fmt.Errorf("%s failed: %q: %w", pluginPath, stderr.String(), err)
	}
	return nil, fmt.Errorf("%s failed with no error message: %w", pluginPath, err)
}
