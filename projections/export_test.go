package projections

// Tests replay in batches of a few dozen events, so that a user's or a
// session's events straddle batches and a replay folds onto rows of earlier
// batches, while a replay beside a busy appender still reaches the head.
func init() { replayBatch = 40 }
