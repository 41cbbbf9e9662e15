// Package sqlitedb opens the SQLite file that the embedded Evident stores
// (event store, read models, checkpoints) share, with the pragmas an audit log
// needs. It owns connection settings only; schemas belong to the packages that
// use the file.
package sqlitedb
