package installer

import (
	"testing"
	"time"
)

func TestNextRefresh(t *testing.T) {
	issued := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	expiry := issued.Add(24 * time.Hour)
	if got := NextRefresh(issued, expiry, 0); got != issued.Add(18*time.Hour) {
		t.Errorf("no jitter: %v", got)
	}
	if got := NextRefresh(issued, expiry, 0.999); got.Before(issued.Add(15*time.Hour)) || !got.Before(issued.Add(16*time.Hour)) {
		t.Errorf("max jitter: %v", got)
	}
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 0: time.Second, 5: 32 * time.Second, 6: time.Minute, 40: time.Minute} {
		for range 100 {
			if got := Backoff(n); got > want || got <= want*4/5 {
				t.Fatalf("Backoff(%d) = %v, want in (%v, %v]", n, got, want*4/5, want)
			}
		}
	}
}
