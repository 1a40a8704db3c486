package dfsmtest

import "time"

// FakeClock is a dfsm.Clock that tests set by hand, in whole seconds; Sleep advances it.
type FakeClock struct {
	T    int64
	frac time.Duration
}

func (c *FakeClock) Now() time.Time { return time.Unix(c.T, 0) }

func (c *FakeClock) Sleep(d time.Duration) {
	c.frac += d
	c.T += int64(c.frac / time.Second)
	c.frac %= time.Second
}
