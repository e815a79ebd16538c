package nodestate

// The journal: the WorkloadEndpoint clears (and reasserts) a DEL or an ADD
// could not send because the datastore was unreachable or refused them. DEL
// never fails for that reason: it records the clear here (one file per
// sandbox, written atomically) and any later plugin invocation, or
// install-cni's sidecar, replays it (package replay) with the same
// containerID guard.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kdd-cni/kdd-cni/internal/atomicfile"
	"github.com/kdd-cni/kdd-cni/internal/wep"
)

// Journal is the directory of the journal's entries (Dir.Journal).
type Journal string

// Entry is one pending annotation clear.
type Entry struct {
	Namespace   string    `json:"namespace"`
	Pod         string    `json:"pod"`
	ContainerID string    `json:"containerID"`
	Recorded    time.Time `json:"recorded"`
	Reason      string    `json:"reason"`
	// NotBefore defers the replay (e.g. until a killed ADD's PATCH, still
	// in flight, has surely landed).
	NotBefore time.Time `json:"notBefore,omitempty"`
	// Reassert, when set, makes this entry restore ContainerID's
	// annotations instead of clearing them (see Reassert).
	Reassert *Reassert `json:"reassert,omitempty"`
}

// Reassert restores a live sandbox's annotations (Endpoint) if the PATCH of
// an older sandbox of the same pod (one of Guards), in flight when that
// sandbox's ADD died, landed over them. Guarded: it changes nothing unless
// the annotations name one of Guards.
type Reassert struct {
	wep.Endpoint
	Guards []string `json:"guards"`
}

func (e Entry) file() string {
	// Names are validated Kubernetes names and CNI container IDs: safe in
	// a file name.
	kind := ""
	if e.Reassert != nil {
		kind = "_reassert"
	}
	return e.Namespace + "_" + e.Pod + "_" + e.ContainerID + kind + ".json"
}

// Write stores an entry atomically.
func (j Journal) Write(e Entry) error {
	if err := os.MkdirAll(string(j), 0o700); err != nil {
		return fmt.Errorf("failed to create journal %s: %w", j, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(string(j), e.file()), b, 0o600); err != nil {
		return fmt.Errorf("failed to write journal entry: %w", err)
	}
	return nil
}

// Pending lists the entries, oldest first. A missing journal is empty.
func (j Journal) Pending() ([]Entry, error) {
	des, err := os.ReadDir(string(j))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read journal %s: %w", j, err)
	}
	var out []Entry
	for _, d := range des {
		if !strings.HasSuffix(d.Name(), ".json") {
			continue
		}
		path := filepath.Join(string(j), d.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue // replayed meanwhile
		}
		var e Entry
		if json.Unmarshal(b, &e) != nil || e.Namespace == "" || e.Pod == "" || e.ContainerID == "" {
			os.Remove(path) // unreadable: nothing can be replayed
			continue
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Recorded.Before(out[k].Recorded) })
	return out, nil
}

// Forget removes an entry (gone already is fine).
func (j Journal) Forget(e Entry) error {
	if err := os.Remove(filepath.Join(string(j), e.file())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove journal entry: %w", err)
	}
	return nil
}

// PendingFor lists the container IDs of other sandboxes of a pod with a
// pending clear: their annotation PATCH may still land.
func (j Journal) PendingFor(namespace, pod, self string) []string {
	entries, _ := j.Pending()
	var out []string
	for _, e := range entries {
		if e.Namespace == namespace && e.Pod == pod && e.Reassert == nil && e.ContainerID != self {
			out = append(out, e.ContainerID)
		}
	}
	return out
}
