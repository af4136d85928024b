package processor

import (
	"math/rand/v2"
	"time"
)

// Backoff bounds. Chat traffic wants a quick second try (River's attempts⁴ seconds is
// built for batch jobs), and a provider outage of hours should still be retried
// every few minutes rather than daily.
const (
	backoffBase = time.Second
	backoffCap  = 10 * time.Minute
)

// Backoff is how long to wait after the given attempt (1-based) failed: exponential
// from a second, capped at ten minutes, with "equal jitter" (half fixed, half random)
// so that events that failed together do not retry together. Outbound deliveries
// (internal/delivery) retry on the same schedule.
func Backoff(attempt int) time.Duration {
	half := backoffCeiling(attempt) / 2
	return half + rand.N(half+1)
}

// backoffCeiling is the un-jittered delay: base·2^(attempt-1), at most backoffCap.
func backoffCeiling(attempt int) time.Duration {
	if attempt >= 20 { // 2^19 s is far past the cap; stop shifting before it overflows
		return backoffCap
	}
	return min(backoffBase<<(max(attempt, 1)-1), backoffCap)
}
