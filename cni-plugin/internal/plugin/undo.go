package plugin

import "log/slog"

// undoStack holds what a command acquired, each with the step that gives it
// back; run gives everything back, last acquired first, and logs (never
// drops) what could not be undone.
type undoStack struct {
	log   *slog.Logger
	steps []undoStep
}

type undoStep struct {
	name string
	fn   func() error
}

func (u *undoStack) push(name string, fn func() error) {
	u.steps = append(u.steps, undoStep{name, fn})
}

func (u *undoStack) run() {
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(); err != nil {
			u.log.Warn("rollback: failed to "+u.steps[i].name, "err", err)
		}
	}
}
