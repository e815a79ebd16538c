package nodestate

// Per-invocation records: what install-cni's sidecar turns into Prometheus
// metrics. A plugin process is
// short-lived, so it cannot serve metrics itself: each invocation appends
// one line of JSON to a file under the state dir and goes on. Appending
// never blocks or fails the command: errors are ignored, and a full store
// (no sidecar draining it) drops records instead of growing.
//
// The sidecar drains in two phases so no append is lost to a rename: each
// tick it reads and deletes the file it set aside on the tick before, then
// sets the live file aside. An append that opened the live file just before
// it was set aside lands in the set-aside file, read one tick later.

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// OpRecord is one plugin invocation.
type OpRecord struct {
	Time    time.Time `json:"t"`
	Plugin  string    `json:"plugin"`
	Command string    `json:"cmd"`
	// Result is "success" or the CNI error code, e.g. "11".
	Result  string  `json:"result"`
	Seconds float64 `json:"s"`
	// Steps are the named steps' durations in seconds.
	Steps map[string]float64 `json:"steps,omitempty"`
	// API counts the requests sent to the API server by verb.
	API map[string]int `json:"api,omitempty"`
	// At is when named events happened, in seconds after Time: the
	// invocation's timeline (its critical path), e.g. "patch-sent".
	At map[string]float64 `json:"at,omitempty"`
}

// Records is the store of per-invocation records (Dir.Records).
type Records string

// MaxBytes bounds the live file: past it, records are dropped until the
// sidecar drains it. At about 200 bytes a record, that is 5,000 records
// between two drains.
const MaxBytes = 1 << 20

const (
	liveName  = "records"
	asideName = "records.draining"
	maxLine   = 64 << 10
)

// Append adds r to the store. It reports whether r was stored; it
// never returns an error, since metrics must not fail a command.
func (rs Records) Append(r OpRecord) bool {
	dir := string(rs)
	b, err := json.Marshal(r)
	if err != nil {
		return false
	}
	b = append(b, '\n')
	f, err := os.OpenFile(filepath.Join(dir, liveName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if os.MkdirAll(dir, 0o700) != nil {
			return false
		}
		f, err = os.OpenFile(filepath.Join(dir, liveName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	}
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size()+int64(len(b)) > MaxBytes {
		return false
	}
	// One write of one line with O_APPEND: concurrent invocations' lines
	// do not interleave.
	_, err = f.Write(b)
	return err == nil
}

// Drain returns the records set aside by the previous Drain, deletes them,
// and sets the live file aside for the next. Lines that do not decode are
// skipped and counted.
func (rs Records) Drain() (recs []OpRecord, skipped int, err error) {
	dir := string(rs)
	aside := filepath.Join(dir, asideName)
	recs, skipped, err = read(aside)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	if err == nil {
		if err := os.Remove(aside); err != nil {
			return nil, 0, err
		}
	}
	if err := os.Rename(filepath.Join(dir, liveName), aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return recs, skipped, err
	}
	return recs, skipped, nil
}

// Peek returns the records in the live file without setting them aside:
// a reader beside the drainer (tests, where no sidecar drains).
func (rs Records) Peek() (recs []OpRecord, skipped int, err error) {
	return read(filepath.Join(string(rs), liveName))
}

func read(path string) ([]OpRecord, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var recs []OpRecord
	skipped := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxLine)
	for sc.Scan() {
		var r OpRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Command == "" {
			skipped++
			continue
		}
		recs = append(recs, r)
	}
	if sc.Err() != nil {
		skipped++ // an over-long line ends the file's useful part
	}
	return recs, skipped, nil
}
