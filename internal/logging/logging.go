// Package logging sets up the daemon's logrus logger so that its lines look like upstream
// pmxcfs's ("[domain] priority: message") on stderr and in syslog or the journal.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// Log is the daemon-wide logger. Packages take a domain entry from it with For.
var Log = logrus.New()

// For returns the logger of one upstream log domain (main, database, dcdb, status, ...).
func For(domain string) *logrus.Entry { return Log.WithField("domain", domain) }

// Upstream logs errors through cfs_critical and normal events through cfs_message, which
// syslog shows as "crit" and "notice"; we keep those words so operators' filters still match.
func priorityName(l logrus.Level) string {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		return "crit"
	case logrus.WarnLevel:
		return "warning"
	case logrus.InfoLevel:
		return "notice"
	default:
		return "debug"
	}
}

func syslogPriority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel:
		return journal.PriCrit
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriNotice
	default:
		return journal.PriDebug
	}
}

// lineFormatter renders "[domain] priority: message", with the caller appended in debug mode.
type lineFormatter struct{}

func (lineFormatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(formatLine(e))
	b.WriteByte('\n')
	return b.Bytes(), nil
}

func formatLine(e *logrus.Entry) string {
	domain, _ := e.Data["domain"].(string)
	if domain == "" {
		domain = "main"
	}
	line := fmt.Sprintf("[%s] %s: %s", domain, priorityName(e.Level), e.Message)
	for k, v := range e.Data {
		if k != "domain" {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
	}
	if e.Caller != nil {
		fn := e.Caller.Function
		if i := strings.LastIndexByte(fn, '.'); i >= 0 {
			fn = fn[i+1:]
		}
		file := e.Caller.File
		if i := strings.LastIndexByte(file, '/'); i >= 0 {
			file = file[i+1:]
		}
		line += fmt.Sprintf(" (%s:%d:%s)", file, e.Caller.Line, fn)
	}
	if len(line) > 8192 {
		line = line[:8192]
	}
	return line
}

// systemHook sends every entry to the journal when it runs, else to syslog (ident pmxcfs,
// facility daemon), independently of whether stderr is still attached.
type systemHook struct {
	mu     sync.Mutex
	sys    *syslog.Writer
	toJrnl bool
}

func (h *systemHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h *systemHook) Fire(e *logrus.Entry) error {
	line := formatLine(e)
	if h.toJrnl {
		return journal.Send(line, syslogPriority(e.Level), map[string]string{"SYSLOG_IDENTIFIER": "pmxcfs"})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sys == nil {
		return nil
	}
	switch syslogPriority(e.Level) {
	case journal.PriCrit:
		return h.sys.Crit(line)
	case journal.PriWarning:
		return h.sys.Warning(line)
	case journal.PriNotice:
		return h.sys.Notice(line)
	default:
		return h.sys.Debug(line)
	}
}

var stderrOut = &switchableWriter{w: os.Stderr}

// switchableWriter lets the daemon stop writing to stderr once it has detached.
type switchableWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchableWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}

// Setup configures Log: stderr always (until DetachStderr), and the journal or syslog unless
// toSystem is false (tests).
func Setup(debug, toSystem bool) {
	Log.SetOutput(stderrOut)
	Log.SetFormatter(lineFormatter{})
	SetDebug(debug)
	if !toSystem {
		return
	}
	h := &systemHook{toJrnl: journal.Enabled()}
	if !h.toJrnl {
		if w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_NOTICE, "pmxcfs"); err == nil {
			h.sys = w
		}
	}
	Log.AddHook(h)
}

// SetDebug switches debug messages and the caller suffix on or off at run time (.debug).
func SetDebug(on bool) {
	if on {
		Log.SetLevel(logrus.DebugLevel)
	} else {
		Log.SetLevel(logrus.InfoLevel)
	}
	Log.SetReportCaller(on)
}

// Debug reports whether debug logging is on.
func Debug() bool { return Log.IsLevelEnabled(logrus.DebugLevel) }

// DetachStderr stops logging to stderr, as upstream does once it has daemonized.
func DetachStderr() {
	stderrOut.mu.Lock()
	stderrOut.w = nil
	stderrOut.mu.Unlock()
}
