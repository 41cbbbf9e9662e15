// Package sqlite is the embedded eventstore adapter: the event log in a SQLite
// file shared with the rest of the process through internal/sqlitedb. It owns
// the events table and its migrations and nothing else; it translates driver
// errors into the eventstore sentinels so that callers never import the driver.
package sqlite
