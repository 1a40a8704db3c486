package cs

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// RetryInterval is upstream's pause after every CS_ERR_TRY_AGAIN.
const RetryInterval = 100 * time.Millisecond

// Policy says how long a call that keeps answering CS_ERR_TRY_AGAIN is repeated and what is
// logged meanwhile. Every policy pauses RetryInterval after each TRY_AGAIN.
type Policy struct {
	// Limit is the number of pauses after which the TRY_AGAIN result is returned; the pause
	// after the last attempt counts, so Limit is also the number of attempts. 0: no limit.
	Limit int
	// LogEvery: a "<op> retry N" line after every LogEvery-th pause.
	LogEvery int
	// Summary: after any pause, a final "<op> retried N times" line, whatever the result.
	Summary bool
}

// The policies upstream uses; Run logs exactly their lines.
var (
	// Send is dfsm.c:dfsm_send_message_full: 100 attempts, 100 pauses, "retry N" every 10th,
	// then "retried N times". A TRY_AGAIN left after the last pause is returned to the caller.
	Send = Policy{Limit: 100, LogEvery: 10, Summary: true}
	// CPG is dfsm.c:dfsm_dispatch, dfsm_join and dfsm_leave: no limit, "retry N" every 10th.
	CPG = Policy{LogEvery: 10}
	// Service is quorum.c:service_quorum_dispatch and confdb.c:service_cmap_dispatch: no
	// limit, "retry N" every 100th.
	Service = Policy{LogEvery: 100}
)

// Run calls try until it returns false (a result other than TRY_AGAIN), pausing with sleep
// after every true. A sleep error (a cancelled context) ends the loop at once and is
// returned; so is reaching p.Limit, with a nil error and the last try's TRY_AGAIN standing.
// retries is the number of pauses taken. sleep is a parameter so that deterministic code (a
// simulated clock) follows the same policy; log may be nil.
func (p Policy) Run(log logrus.FieldLogger, op string, sleep func(time.Duration) error, try func() (again bool)) (retries int, err error) {
	for try() {
		if err = sleep(RetryInterval); err != nil {
			break
		}
		retries++
		if p.LogEvery > 0 && retries%p.LogEvery == 0 && log != nil {
			log.Infof("%s retry %d", op, retries)
		}
		if p.Limit > 0 && retries >= p.Limit {
			break
		}
	}
	if p.Summary && retries > 0 && log != nil {
		log.Infof("%s retried %d times", op, retries)
	}
	return retries, err
}

// Sleep returns a sleep for Policy.Run that pauses on a real timer and fails with ctx.Err()
// once ctx is done.
func Sleep(ctx context.Context) func(time.Duration) error {
	return func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
}
