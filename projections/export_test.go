package projections

// Tests replay in batches of a few dozen events, so that a user's or a
// session's events straddle batches and a replay folds onto rows of earlier
// batches, while a replay beside a busy appender still reaches the head.
func init() { replayBatch = 40 }

// SetReplayBatch sets the replay's batch size until the returned func
// restores it (benchmarks replay in batches of the real size).
func SetReplayBatch(n int) (restore func()) {
	old := replayBatch
	replayBatch = n
	return func() { replayBatch = old }
}

// DefaultReplayBatch is the replay's batch size outside the tests (package
// variables are set before init runs).
var DefaultReplayBatch = replayBatch

// Wakes counts the times the Runner woke its waiters.
func (r *Runner) Wakes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wakes
}
