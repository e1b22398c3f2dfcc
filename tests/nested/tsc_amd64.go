package nested

import "time"

func rdtsc() uint64

// tscAt returns a TSC reading and the time taken together, retrying until
// the pair is tight (no preemption between them).
func tscAt() (uint64, time.Time, bool) {
	for i := 0; i < 20; i++ {
		a := rdtsc()
		t := time.Now()
		b := rdtsc()
		if b > a && b-a < 20_000 {
			return a + (b-a)/2, t, true
		}
	}
	return 0, time.Time{}, false
}

// measureTSCkHz measures the host's TSC rate, which is also the rate of
// the TSC that QEMU TCG shows L1 (it reads the host TSC). It takes 100 ms.
func measureTSCkHz() int {
	c0, t0, ok0 := tscAt()
	time.Sleep(100 * time.Millisecond)
	c1, t1, ok1 := tscAt()
	d := t1.Sub(t0)
	if !ok0 || !ok1 || c1 <= c0 || d <= 0 {
		return 0
	}
	khz := int(float64(c1-c0) / (float64(d) / float64(time.Millisecond)))
	if khz < 100_000 || khz > 10_000_000 {
		return 0 // not plausible (100 MHz .. 10 GHz): let L1 calibrate
	}
	return khz
}
