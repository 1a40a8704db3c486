package cs

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestErrorFormatAndIs(t *testing.T) {
	err := Check("cpg_mcast_joined", ErrTryAgain)
	if err.Error() != "cpg: cpg_mcast_joined: CS_ERR_TRY_AGAIN" {
		t.Errorf("%q", err)
	}
	if !errors.Is(fmt.Errorf("x: %w", err), ErrTryAgain) || errors.Is(err, ErrLibrary) {
		t.Error("errors.Is")
	}
	if Check("cmap_get", OK) != nil {
		t.Error("CS_OK is not an error")
	}
	if got := Closed("quorum_getquorate").Error(); got != "quorum: quorum_getquorate: CS_ERR_BAD_HANDLE (handle closed)" {
		t.Errorf("%q", got)
	}
	if Code(42).String() != "CS_ERR_UNKNOWN(42)" {
		t.Error(Code(42).String())
	}
}

// Upstream (dfsm.c dfsm_send_message_full) on a persistent TRY_AGAIN: 100
// calls, a pause after each, "retry N" at every 10th, then "retried 100
// times" and the TRY_AGAIN result.
func TestRetryMatchesUpstreamSendPolicy(t *testing.T) {
	retryInterval = time.Microsecond
	defer func() { retryInterval = 100 * time.Millisecond }()
	log, hook := test.NewNullLogger()
	calls := 0
	err := Retry(context.Background(), log, "cpg_mcast_joined", 100, 10, func() Code { calls++; return ErrTryAgain })
	if !errors.Is(err, ErrTryAgain) || calls != 100 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	var msgs []string
	for _, e := range hook.AllEntries() {
		msgs = append(msgs, e.Message)
	}
	want := []string{}
	for i := 10; i <= 100; i += 10 {
		want = append(want, fmt.Sprintf("cpg_mcast_joined retry %d", i))
	}
	want = append(want, "cpg_mcast_joined retried 100 times")
	if fmt.Sprint(msgs) != fmt.Sprint(want) {
		t.Fatalf("logs %q", msgs)
	}

	// Success after 3 TRY_AGAINs.
	hook.Reset()
	calls = 0
	err = Retry(context.Background(), log, "cpg_join", 0, 10, func() Code {
		calls++
		if calls < 4 {
			return ErrTryAgain
		}
		return OK
	})
	if err != nil || calls != 4 || hook.LastEntry().Message != "cpg_join retried 3 times" {
		t.Fatalf("%v %d %v", err, calls, hook.LastEntry())
	}

	// Unbounded retries stop with the context.
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Retry(ctx, logrus.New(), "cpg_dispatch", 0, 10, func() Code {
		calls++
		if calls == 5 {
			cancel()
		}
		return ErrTryAgain
	})
	if !errors.Is(err, ErrTryAgain) || !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}

func TestGuardFinalizesOnceAfterLastUser(t *testing.T) {
	n := 0
	g, err := NewGuard(func() { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if !g.Enter() {
		t.Fatal("Enter on open guard")
	}
	g.Close()
	g.Close()
	if n != 0 || g.Enter() {
		t.Fatal("finalized while in use, or Enter after Close")
	}
	g.Leave()
	g.Close()
	if n != 1 {
		t.Fatalf("finalized %d times", n)
	}
}
