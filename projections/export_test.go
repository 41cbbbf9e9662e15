package projections

// Tests replay in batches of a few events, so that a user's or a session's
// events straddle batches and a replay folds onto rows of earlier batches.
func init() { replayBatch = 7 }
