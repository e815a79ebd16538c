package nodestate

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestAppendDrainTwoPhase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "metrics")
	for i := range 3 {
		if !Records(dir).Append(OpRecord{Command: "ADD", Result: "success", Seconds: float64(i)}) {
			t.Fatal("append refused")
		}
	}
	recs, skipped, err := Records(dir).Drain() // sets the 3 aside
	if err != nil || len(recs) != 0 || skipped != 0 {
		t.Fatalf("first drain: %v %d %v", recs, skipped, err)
	}
	Records(dir).Append(OpRecord{Command: "DEL", Result: "11"}) // into a new live file
	recs, _, err = Records(dir).Drain()
	if err != nil || len(recs) != 3 || recs[2].Seconds != 2 {
		t.Fatalf("second drain: %+v %v", recs, err)
	}
	recs, _, _ = Records(dir).Drain()
	if len(recs) != 1 || recs[0].Command != "DEL" || recs[0].Result != "11" {
		t.Fatalf("third drain: %+v", recs)
	}
	if recs, _, err = Records(dir).Drain(); err != nil || len(recs) != 0 {
		t.Fatalf("empty store: %v %v", recs, err)
	}
}

func TestCorruptLinesSkipped(t *testing.T) {
	dir := t.TempDir()
	Records(dir).Append(OpRecord{Command: "ADD", Result: "success"})
	f, _ := os.OpenFile(filepath.Join(dir, liveName), os.O_WRONLY|os.O_APPEND, 0)
	fmt.Fprint(f, "{\"cmd\":\"ADD\",\"res\n\x00garbage\n{}\n")
	f.Close()
	Records(dir).Append(OpRecord{Command: "DEL", Result: "success"})
	Records(dir).Drain()
	recs, skipped, err := Records(dir).Drain()
	if err != nil || len(recs) != 2 || skipped != 3 {
		t.Fatalf("recs %+v skipped %d err %v", recs, skipped, err)
	}
}

func TestBoundedWithoutDrain(t *testing.T) {
	dir := t.TempDir()
	stored := 0
	for range 20000 {
		if Records(dir).Append(OpRecord{Command: "ADD", Result: "success", Steps: map[string]float64{"ipam": 0.01}}) {
			stored++
		}
	}
	fi, err := os.Stat(filepath.Join(dir, liveName))
	if err != nil || fi.Size() > MaxBytes {
		t.Fatalf("store grew past its bound: %v %v", fi.Size(), err)
	}
	if stored == 0 || stored == 20000 {
		t.Fatalf("stored %d of 20000", stored)
	}
}

func TestConcurrentAppendsAllDecode(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				Records(dir).Append(OpRecord{Command: "ADD", Result: "success", Plugin: fmt.Sprint(w, "-", i)})
			}
		})
	}
	wg.Wait()
	Records(dir).Drain()
	recs, skipped, _ := Records(dir).Drain()
	if len(recs) != 1600 || skipped != 0 {
		t.Fatalf("got %d records, %d skipped", len(recs), skipped)
	}
}
