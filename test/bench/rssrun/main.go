// Command rssrun runs a program and reports the program's own resource use
// on file descriptor 3 as JSON ({"maxrss_kb":…,"cpu_ns":…}). The benchmark
// starts plugins through it: Linux charges a child forked straight from the
// large benchmark process with the benchmark's memory until it execs, so the
// plugin must be forked from a small process (this one) for ru_maxrss to be
// the plugin's. stdin, stdout, stderr and the exit code pass through.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rssrun PROGRAM [ARGS...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		fmt.Fprintln(os.Stderr, "rssrun:", err)
		os.Exit(127)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		report := os.NewFile(3, "report")
		fmt.Fprintf(report, `{"maxrss_kb":%d,"cpu_ns":%d}`, ru.Maxrss, ru.Utime.Nano()+ru.Stime.Nano())
		report.Close()
	}
	os.Exit(cmd.ProcessState.ExitCode())
}
