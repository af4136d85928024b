package processor

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempt  int
		low, top time.Duration
	}{
		{1, 500 * time.Millisecond, time.Second},
		{2, time.Second, 2 * time.Second},
		{5, 8 * time.Second, 16 * time.Second},
		{11, 5 * time.Minute, 10 * time.Minute},
		{40, 5 * time.Minute, 10 * time.Minute},
	} {
		for range 100 {
			if d := Backoff(tc.attempt); d < tc.low || d > tc.top {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", tc.attempt, d, tc.low, tc.top)
			}
		}
	}
}
