package logging

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileAndRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "cni.log")
	log, c, err := New(Options{Path: p, Level: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "containerID", "abc")
	c.Close()
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "hello") || !strings.Contains(string(b), "containerID=abc") {
		t.Fatalf("log: %s", b)
	}
	if err := os.WriteFile(p, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, c, _ = New(Options{Path: p, MaxSize: 1})
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
	log, c, err := New(Options{Path: p, Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
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
