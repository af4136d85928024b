package processor

import (
	"context"
	"time"
)

// RunJobs is the loop of the background jobs other packages run under a lease
// (erasures, bulk replays): next claims one job and runs it, reporting whether there
// was one; RunJobs calls it until there is none or it fails (failed hears why: the
// job stays leased and another pass resumes it once the lease runs out), then waits
// for wake (a job was just started here) or poll (one another process left
// unfinished), until ctx ends.
func RunJobs(ctx context.Context, poll time.Duration, wake <-chan struct{}, next func(context.Context) (bool, error), failed func(error)) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			ran, err := next(ctx)
			if err != nil {
				if ctx.Err() == nil {
					failed(err)
				}
				break
			}
			if !ran {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
	}
}

// Sleep waits d or until ctx ends; it reports whether the full d passed (a d of zero
// or less passes at once).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	return sleep(ctx, d)
}
