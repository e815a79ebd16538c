package podlock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMutualExclusion(t *testing.T) {
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := Acquire(context.Background(), "test-"+t.Name())
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			if n > max.Load() {
				max.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
			inside.Add(-1)
			l.Release()
		}()
	}
	wg.Wait()
	if max.Load() != 1 {
		t.Errorf("%d holders at once", max.Load())
	}
	held, _ := Acquire(context.Background(), "busy-"+t.Name())
	defer held.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, "busy-"+t.Name()); err == nil {
		t.Error("acquired a held lock")
	}
}
