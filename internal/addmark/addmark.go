// Package addmark marks, on the node, the sandboxes whose ADD is running. A
// mark that outlives its ADD means the ADD was killed, possibly with its
// annotation PATCH still in flight: the DEL of that sandbox then journals a
// deferred clear, and a newer ADD of the same pod journals a reassert, so a
// PATCH that lands late is still undone.
package addmark

import (
	"os"
	"path/filepath"
)

// Marks are the marks kept in one directory (state_dir/adding).
type Marks struct{ Dir string }

func (m Marks) path(containerID string) string { return filepath.Join(m.Dir, containerID) }

// Mark records that an ADD of containerID (of namespace/pod) is running.
func (m Marks) Mark(namespace, pod, containerID string) error {
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(m.path(containerID), []byte(namespace+"/"+pod), 0o600)
}

// Done removes the mark of an ADD that returned.
func (m Marks) Done(containerID string) { os.Remove(m.path(containerID)) }

// Has reports a mark without clearing it.
func (m Marks) Has(containerID string) bool {
	_, err := os.Stat(m.path(containerID))
	return err == nil
}

// WasInterrupted reports (and clears) a mark left by a killed ADD.
func (m Marks) WasInterrupted(containerID string) bool {
	return os.Remove(m.path(containerID)) == nil
}

// Others lists the marked sandboxes of namespace/pod other than self.
func (m Marks) Others(namespace, pod, self string) []string {
	des, _ := os.ReadDir(m.Dir)
	var out []string
	for _, d := range des {
		if d.Name() == self {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(m.Dir, d.Name())); err == nil && string(b) == namespace+"/"+pod {
			out = append(out, d.Name())
		}
	}
	return out
}

// ForgetExcept removes the marks of sandboxes keep rejects (GC).
func (m Marks) ForgetExcept(keep func(containerID string) bool) {
	des, _ := os.ReadDir(m.Dir)
	for _, d := range des {
		if !keep(d.Name()) {
			os.Remove(filepath.Join(m.Dir, d.Name()))
		}
	}
}
