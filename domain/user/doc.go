// Package user is the User aggregate: its events, state, commands and the pure
// Decide and Evolve functions. It does no I/O and reads no clock: time, ids and
// token hashes are inputs.
package user
