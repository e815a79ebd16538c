package logging

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFileAndRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "cni.log")
	log, c := New(Options{Path: p, Level: "debug"})
	log.Debug("hello", "containerID", "abc")
	c.Close()
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "hello") || !strings.Contains(string(b), "containerID=abc") {
		t.Fatalf("log: %s", b)
	}
	if err := os.WriteFile(p, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, c = New(Options{Path: p, MaxSize: 1})
	c.Close()
	if fi, err := os.Stat(p + ".1"); err != nil || fi.Size() != 2<<20 {
		t.Errorf("not rotated: %v", err)
	}
	if Level("WARNING") != slog.LevelWarn || Level("bogus") != slog.LevelInfo {
		t.Error("levels")
	}
}

func TestJSONFormat(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cni.log")
	log, c := New(Options{Path: p, Format: "json"})
	log.Info("one", "containerID", "abc")
	log.Warn("two", "n", 2)
	c.Close()
	f, _ := os.Open(p)
	defer f.Close()
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d is not one JSON object: %v: %s", lines, err, sc.Text())
		}
		if m["msg"] == nil || m["pid"] == nil {
			t.Errorf("line %d lacks msg or pid: %v", lines, m)
		}
	}
	if lines != 2 || !ValidFormat("json") || ValidFormat("yaml") {
		t.Errorf("lines %d", lines)
	}
}

// A log file that cannot be created or opened never fails the caller: the
// logger writes to stderr, a warning first.
func TestUnopenableFileLogsToStderr(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"parent is a file": filepath.Join(notDir, "cni.log"),
		"path is a dir":    dir,
	} {
		t.Run(name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			stderr := os.Stderr
			os.Stderr = w
			log, c := New(Options{Path: path})
			log.Info("still logged", "k", "v")
			os.Stderr = stderr
			w.Close()
			c.Close()
			b, _ := io.ReadAll(r)
			out := string(b)
			if !strings.Contains(out, "logging to stderr: cannot open the log file") || !strings.Contains(out, "still logged") {
				t.Errorf("stderr: %q", out)
			}
		})
	}
}

// Rotated files older than MaxAge days are removed; newer ones and the
// live file are kept.
func TestPruneByAge(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cni.log")
	now := time.Now()
	for i, age := range map[int]time.Duration{1: time.Hour, 2: 8 * 24 * time.Hour, 3: 40 * 24 * time.Hour} {
		f := fmt.Sprintf("%s.%d", p, i)
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p, []byte("live"), 0o644); err != nil {
		t.Fatal(err)
	}
	prune(Options{Path: p, MaxAge: 7}, now)
	for i, want := range map[int]bool{1: true, 2: false, 3: false} {
		if _, err := os.Stat(fmt.Sprintf("%s.%d", p, i)); (err == nil) != want {
			t.Errorf("%s.%d kept %v, want %v", p, i, err == nil, want)
		}
	}
	prune(Options{Path: p}, now) // default 30 days: .1 stays
	if _, err := os.Stat(p + ".1"); err != nil {
		t.Error("a day-old rotation removed under the 30-day default")
	}
	if _, err := os.Stat(p); err != nil {
		t.Error("the live file removed")
	}
}
