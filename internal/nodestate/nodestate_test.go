package nodestate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := Check(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("a missing state_dir: %v", err)
	}
	own := filepath.Join(dir, "own")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Check(own); err != nil {
		t.Fatalf("the plugin's own 0755 state_dir: %v", err)
	}
	if st, _ := os.Stat(own); st.Mode().Perm() != 0o700 {
		t.Errorf("not tightened: %04o", st.Mode().Perm())
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(open, 0o777)
	if err := Check(open); err == nil || !strings.Contains(err.Error(), "lets others write") {
		t.Errorf("a world-writable state_dir: %v", err)
	}
	file := filepath.Join(dir, "file")
	_ = os.WriteFile(file, nil, 0o600)
	if err := Check(file); err == nil {
		t.Error("a file as state_dir accepted")
	}
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := Check(other); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("a state_dir of another user: %v", err)
	}
}
