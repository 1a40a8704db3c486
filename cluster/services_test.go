package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// scriptedService fails or succeeds per call as its script says, then blocks until ctx ends.
type scriptedService struct {
	script   []error
	calls    int
	blocking chan struct{} // closed when the script is used up
}

func (s *scriptedService) Name() string { return "quorum" }

func (s *scriptedService) Run(ctx context.Context) error {
	s.calls++
	if s.calls <= len(s.script) {
		return s.script[s.calls-1]
	}
	if s.calls == len(s.script)+1 {
		close(s.blocking)
	}
	<-ctx.Done()
	return nil
}

// A failing service is retried; the specific error is logged on every attempt and "can't
// initialize service" once per streak of failures, as upstream's service loop does.
func TestSuperviseRetriesAndLogsOncePerStreak(t *testing.T) {
	old := retryInterval
	retryInterval = time.Millisecond
	defer func() { retryInterval = old }()

	down := errors.New("quorum_initialize: CS_ERR_LIBRARY")
	svc := &scriptedService{script: []error{down, down, nil, down}, blocking: make(chan struct{})}
	logger, hook := logtest.NewNullLogger()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Supervise(ctx, logrus.NewEntry(logger), svc)
		close(done)
	}()
	select {
	case <-svc.blocking:
	case <-time.After(5 * time.Second):
		t.Fatal("service not restarted after its failures")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Supervise did not return after cancel")
	}
	var got []string
	for _, e := range hook.AllEntries() {
		got = append(got, e.Message)
	}
	want := []string{
		"quorum: quorum_initialize: CS_ERR_LIBRARY", "can't initialize service",
		"quorum: quorum_initialize: CS_ERR_LIBRARY",
		"quorum: quorum_initialize: CS_ERR_LIBRARY", "can't initialize service",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if svc.calls != 5 {
		t.Errorf("Run called %d times, want 5 (4 scripted + the one blocking until cancel)", svc.calls)
	}
}

func TestMembersOnlineSet(t *testing.T) {
	var m Members
	m.Set([]uint32{3, 1})
	got := m.get()
	if len(got) != 2 || got[0] != 3 || got[1] != 1 {
		t.Fatalf("members %v", got)
	}
	m.Set(nil)
	if len(m.get()) != 0 {
		t.Fatal("members not cleared")
	}
}
