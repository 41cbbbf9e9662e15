package readmodels

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// channelExpr is the SQL for the NOTIFY channel of the schema the connection
// works in: one channel per schema, so that databases holding several
// Evident schemas (tests do) do not wake each other. md5 keeps the name
// within the 63 bytes of an identifier.
const channelExpr = `'evident_checkpoints_' || md5(current_schema())`

// How Listen watches its connection between notifications.
const (
	listenHealthEvery = 5 * time.Second
	listenPingTimeout = 2 * time.Second
)

// CheckpointsChanged returns a channel that is closed the next time a
// checkpoint may have moved: when a transaction of this Store that wrote a
// checkpoint commits, and, while Listen runs on PostgreSQL, when any process
// commits one. Take the channel before reading the checkpoints, then wait
// on it, so that no change falls between the two.
func (s *Store) CheckpointsChanged() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) broadcast() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// Listening reports whether CheckpointsChanged hears of every process's
// checkpoints now: on SQLite always (one process owns the file), on
// PostgreSQL while a Listen is subscribed. While it is false, waiters must
// poll.
func (s *Store) Listening() bool {
	if s.dialect != DialectPostgres {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listening > 0
}

func (s *Store) setListening(delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listening += delta
}

// Listen relays the checkpoint notifications of every process on the
// database to CheckpointsChanged, on one dedicated connection of the write
// pool (LISTEN; a read pool may be a replica, which hears no NOTIFY). It
// returns nil when ctx ends, and an error (ErrUnavailable when the database
// failed) when it cannot listen any more; call it again after a pause. It
// checks its connection every few seconds, so a dead one is noticed even
// without traffic. On SQLite it only waits for ctx: there is nothing to hear.
//
// It needs the pgx driver (github.com/jackc/pgx/v5/stdlib).
func (s *Store) Listen(ctx context.Context) error {
	if s.dialect != DialectPostgres {
		<-ctx.Done()
		return nil
	}
	conn, err := s.write.Conn(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("readmodels: listen: %w", classify(err))
	}
	defer discard(conn)
	err = conn.Raw(func(dc any) error {
		c, err := pgxConn(dc)
		if err != nil {
			return err
		}
		var channel string
		if err := c.QueryRow(ctx, `SELECT `+channelExpr).Scan(&channel); err != nil {
			return err
		}
		if _, err := c.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
			return err
		}
		s.setListening(1)
		defer s.setListening(-1)
		s.broadcast() // whatever moved while nobody listened
		for {
			wctx, cancel := context.WithTimeout(ctx, listenHealthEvery)
			_, err := c.WaitForNotification(wctx)
			cancel()
			switch {
			case err == nil:
				s.broadcast()
			case ctx.Err() != nil:
				return nil
			case pgconn.Timeout(err):
				pctx, cancel := context.WithTimeout(ctx, listenPingTimeout)
				err := c.Ping(pctx)
				cancel()
				if err != nil && ctx.Err() == nil {
					return err
				}
			default:
				return err
			}
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("readmodels: listen: %w", classify(err))
	}
	return nil
}

// pgxConn is the pgx connection under a database/sql driver connection.
func pgxConn(dc any) (*pgx.Conn, error) {
	c, ok := dc.(interface{ Conn() *pgx.Conn })
	if !ok {
		return nil, fmt.Errorf("readmodels: PostgreSQL needs the pgx driver, not %T", dc)
	}
	return c.Conn(), nil
}

// discard closes the connection under conn for good instead of handing it
// back to the pool: it holds session state (LISTEN, advisory locks) that
// must not outlive the session, and closing the session is the one release
// that cannot fail.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(dc any) error {
		if c, err := pgxConn(dc); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = c.Close(ctx)
		}
		return driver.ErrBadConn // database/sql closes the driver connection too
	})
	_ = conn.Close() // already closed by the ErrBadConn above; nothing left to report
}

// notifyTimeout bounds one NOTIFY of the notifier.
const notifyTimeout = 5 * time.Second

// notifyOthers has the notifier tell the other processes that a checkpoint
// moved; on SQLite there are none. It never blocks: a NOTIFY already due
// covers this commit too, so one NOTIFY is sent for all the commits that
// happened while the previous one was on its way.
func (s *Store) notifyOthers() {
	if s.dialect != DialectPostgres {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if !s.notifying {
		s.notifying = true
		go s.notifier()
	}
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default: // one is due already
	}
}

// notifier sends one NOTIFY per wake-up, outside any transaction, on a
// pooled connection of the write pool, until Close. A NOTIFY that fails or
// is lost (a crash after the commit) only delays the other processes'
// waiters: they re-read the checkpoints on a fallback poll. So its error is
// dropped here; there is nobody to return it to.
func (s *Store) notifier() {
	defer close(s.stopped)
	for {
		select {
		case <-s.quit:
			return
		case <-s.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
		// A NOTIFY is a transaction with an id, whose commit would wait for
		// a WAL flush; it carries nothing to keep, so it does not wait.
		_, _ = s.write.ExecContext(ctx, `SELECT set_config('synchronous_commit', 'off', true), pg_notify(`+channelExpr+`, '')`)
		cancel()
	}
}

// Close stops the Store's notifier and waits for it. It does not close the
// pools, which belong to the caller; call it before closing them. Calling it
// twice is harmless; after it, commits still wake this process's waiters
// but no longer notify other processes.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	running := s.notifying
	s.mu.Unlock()
	close(s.quit)
	if running {
		<-s.stopped
	}
	if s.wc != nil {
		return errors.Join(s.wc.close(), s.rc.close())
	}
	return nil
}
