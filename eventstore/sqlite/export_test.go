package sqlite

// Commits is the number of append transactions s has committed.
func Commits(s *Store) uint64 { return s.commits.Load() }

// Queued is the number of Append calls waiting for a group, cancelled ones
// included until the committer drops them.
func Queued(s *Store) int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}

// Closed reports whether Close has begun.
func Closed(s *Store) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.closed
}
