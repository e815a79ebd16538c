package nodestate

// ADD marks: the sandboxes whose ADD is running. A mark that outlives its
// ADD means the ADD was killed, possibly with its annotation PATCH still in
// flight: the DEL of that sandbox then journals a deferred clear, and a
// newer ADD of the same pod journals a reassert, so a PATCH that lands late
// is still undone.

import (
	"os"
	"path/filepath"
)

// Marks are the marks of running ADDs, one file per sandbox in one
// directory (Dir.Adding).
type Marks string

func (m Marks) path(containerID string) string { return filepath.Join(string(m), containerID) }

// Mark records that an ADD of containerID (of namespace/pod) is running.
func (m Marks) Mark(namespace, pod, containerID string) error {
	if err := os.MkdirAll(string(m), 0o700); err != nil {
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
	des, _ := os.ReadDir(string(m))
	var out []string
	for _, d := range des {
		if d.Name() == self {
			continue
		}
		if b, err := os.ReadFile(m.path(d.Name())); err == nil && string(b) == namespace+"/"+pod {
			out = append(out, d.Name())
		}
	}
	return out
}

// ForgetExcept removes the marks of sandboxes keep rejects (GC).
func (m Marks) ForgetExcept(keep func(containerID string) bool) {
	des, _ := os.ReadDir(string(m))
	for _, d := range des {
		if !keep(d.Name()) {
			os.Remove(m.path(d.Name()))
		}
	}
}
