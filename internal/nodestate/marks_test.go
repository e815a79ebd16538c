package nodestate

import (
	"slices"
	"testing"
)

func TestMarks(t *testing.T) {
	m := Marks(t.TempDir() + "/adding")
	for _, id := range []string{"a", "b"} {
		if err := m.Mark("ns", "web", id); err != nil {
			t.Fatal(err)
		}
	}
	_ = m.Mark("ns", "other", "c")
	if got := m.Others("ns", "web", "b"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Others = %v", got)
	}
	m.Done("b")
	if m.Has("b") || !m.Has("a") {
		t.Error("Has must see exactly the marks left")
	}
	if m.WasInterrupted("b") || !m.WasInterrupted("a") || m.WasInterrupted("a") {
		t.Error("WasInterrupted must report a left mark once")
	}
	m.ForgetExcept(func(id string) bool { return id != "c" })
	if got := m.Others("ns", "other", ""); len(got) != 0 {
		t.Errorf("after ForgetExcept: %v", got)
	}
}
