// Package logging sets up the plugin's slog logger: a file named in the
// network configuration (log_file_path), never stdout, which carries the CNI
// result. Without a file, logs are discarded. A log file that cannot be
// created or opened never fails a command (least of all DEL): the logger
// writes to stderr instead, and says why first.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Options come from the netconf's log_* keys.
type Options struct {
	Level    string // debug, info, warn(ing), error; anything else is info
	Path     string // empty: discard
	MaxSize  int    // MB before rotation at start-up (default 100)
	MaxCount int    // rotated files kept (default 10)
	MaxAge   int    // days a rotated file is kept (default 30)
	Format   string // "json": one JSON object per line; else key=value text
}

// ValidFormat tells whether a log_format value is one New accepts.
func ValidFormat(f string) bool { return f == "" || f == "text" || f == "json" }

// New returns a logger and a closer for its file; on stderr (see the
// package comment) when the file cannot be created or opened.
func New(o Options) (*slog.Logger, io.Closer) {
	if o.Path == "" {
		return slog.New(slog.DiscardHandler), io.NopCloser(nil)
	}
	f, err := open(o)
	if err != nil {
		l := slog.New(Handler(os.Stderr, o.Format, Level(o.Level))).With("pid", os.Getpid())
		l.Warn("logging to stderr: cannot open the log file", "path", o.Path, "err", err)
		return l, io.NopCloser(nil)
	}
	return slog.New(Handler(f, o.Format, Level(o.Level))).With("pid", os.Getpid()), f
}

// open rotates the log file if due, prunes old rotations and opens it for
// appending.
func open(o Options) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(o.Path), 0o755); err != nil {
		return nil, fmt.Errorf("create log directory for %s: %w", o.Path, err)
	}
	rotate(o)
	prune(o, time.Now())
	f, err := os.OpenFile(o.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file %s: %w", o.Path, err)
	}
	return f, nil
}

// Handler writes to w in the format named (json, else text).
func Handler(w io.Writer, format string, level slog.Level) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// Level maps Calico's log_level strings.
func Level(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "fatal", "panic":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// rotate renames path to path.1 (and older ones up) once it exceeds MaxSize.
// Each invocation is short-lived, so checking at start-up suffices.
func rotate(o Options) {
	maxSize, maxCount := o.MaxSize, o.MaxCount
	if maxSize <= 0 {
		maxSize = 100
	}
	if maxCount <= 0 {
		maxCount = 10
	}
	fi, err := os.Stat(o.Path)
	if err != nil || fi.Size() < int64(maxSize)<<20 {
		return
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", o.Path, maxCount))
	for i := maxCount - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", o.Path, i), fmt.Sprintf("%s.%d", o.Path, i+1))
	}
	_ = os.Rename(o.Path, o.Path+".1")
}

// prune removes the rotated files (path.1 … path.MaxCount) last written
// more than MaxAge days before now.
func prune(o Options, now time.Time) {
	maxAge, maxCount := o.MaxAge, o.MaxCount
	if maxAge <= 0 {
		maxAge = 30
	}
	if maxCount <= 0 {
		maxCount = 10
	}
	cutoff := now.Add(-time.Duration(maxAge) * 24 * time.Hour)
	for i := 1; i <= maxCount; i++ {
		p := fmt.Sprintf("%s.%d", o.Path, i)
		if fi, err := os.Stat(p); err == nil && fi.ModTime().Before(cutoff) {
			_ = os.Remove(p)
		}
	}
}
