package integration_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/email"
	"evident/domain/session"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections/integration"
)

// lifeOf is the whole life of one user, with its e-mail claims and a
// session, as the commands would append it: PII in the events, none allowed
// in the messages.
func lifeOf(uid uuid.UUID) [][]batch {
	us, ss := "user-"+uid.String(), "session-"+uuid.NewString()
	sid := uuid.New()
	claim := email.Stream(uid.String() + "@example.com")
	em, name := piiEmail, piiName
	exp := t0.Add(72 * time.Hour)
	return [][]batch{
		{{us, []typed{user.Created{UserID: uid, Email: piiEmail, Name: piiName, Roles: []string{"member"}, CredentialID: &piiCredential}}},
			{claim, []typed{email.Claimed{UserID: uid}}}},
		{{us, []typed{user.Updated{UserID: uid, Email: &em, Name: &name, CredentialID: &piiCredential, UpdatedBy: "admin-1"}}}},
		{{us, []typed{user.ActivationRequested{UserID: uid, TokenHash: piiTokenHash, ExpiresAt: exp, RequestedBy: "admin-1"}}}},
		{{us, []typed{user.ActivationTokenExpired{UserID: uid, TokenHash: piiTokenHash, ExpiredAt: exp}}}},
		{{us, []typed{user.Activated{UserID: uid, ActivatedBy: "admin-1", Method: user.MethodAdmin}}}},
		{{ss, []typed{session.LoggedIn{SessionID: sid, UserID: uid, TokenHash: piiTokenHash, ExpiresAt: exp}}}},
		{{us, []typed{user.StatusChanged{UserID: uid, From: user.StatusActive, To: user.StatusSuspended, Reason: piiReason, ChangedBy: "admin-1"}}},
			{ss, []typed{session.Revoked{SessionID: sid, UserID: uid, Reason: session.ReasonUserSuspended, RevokedBy: "system"}}}},
		{{us, []typed{user.Deactivated{UserID: uid, DeactivatedBy: "admin-1", Reason: piiReason}}}},
		{{us, []typed{user.Deleted{UserID: uid, DeletedBy: "admin-1", Reason: piiReason}}},
			{claim, []typed{email.Released{UserID: uid}}}},
	}
}

func TestPublisherThroughRunnerSendsEveryEventConfirmedAndPIILight(t *testing.T) {
	t.Parallel()
	url := brokerURL(t)
	exchange, queue := unique("x"), unique("q")
	bindQueue(t, url, exchange, queue, "#", nil)
	ctx := context.Background()

	l := newLog(t)
	var (
		want    = map[string]appended{} // by event id
		claims  int
		lastPos eventstore.Position
	)
	const users = 40
	for range users {
		for _, bs := range lifeOf(uuid.New()) {
			evs, pos, err := l.append(ctx, bs...)
			require.NoError(t, err)
			lastPos = pos
			for _, e := range evs {
				if email.IsType(e.Type) {
					claims++
					continue
				}
				want[e.ID.String()] = e
			}
		}
	}
	require.Len(t, want, users*10)

	pub := integration.NewPublisher(url, integration.Options{Exchange: exchange, Logger: quiet()})
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	start := time.Now()
	r := startRunner(t, l, pub)
	waitCheckpoint(t, r, integration.PublisherName, lastPos, 30*time.Second)
	took := time.Since(start)
	t.Logf("published %d messages (and skipped %d claim events) with confirms through the runner in %s: %.0f msg/s",
		len(want), claims, took.Round(time.Millisecond), float64(len(want))/took.Seconds())
	st := reactorStatus(r, integration.PublisherName)
	assert.Zero(t, st.Parked)
	assert.Empty(t, st.LastError)

	c := collect(t, url, queue)
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	require.Eventually(t, func() bool { return len(c.missing(ids)) == 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // anything extra would show up now
	got := c.deliveries()
	assert.Len(t, got, len(want), "one message per event, none for the claims")

	for _, d := range got {
		e, ok := want[d.MessageId]
		if !assert.True(t, ok, "unexpected message %s (%s)", d.MessageId, d.Type) {
			continue
		}
		assert.Equal(t, e.Type, d.RoutingKey)
		assert.Equal(t, e.Type, d.Type)
		assert.Equal(t, exchange, d.Exchange)
		assert.Equal(t, amqp.Persistent, d.DeliveryMode)
		assert.Equal(t, "application/json", d.ContentType)
		assert.Equal(t, "evident", d.AppId)
		assert.Equal(t, e.OccurredAt.Unix(), d.Timestamp.Unix())
		assert.Equal(t, e.CorrelationID, d.CorrelationId)
		assert.Equal(t, e.CorrelationID, d.Headers[integration.HeaderCorrelationID])
		assert.EqualValues(t, 1, d.Headers[integration.HeaderSchemaVersion])

		var m integration.Message
		require.NoError(t, json.Unmarshal(d.Body, &m))
		assert.Equal(t, e.Type, m.Type)
		assert.Equal(t, 1, m.Version)
		assert.Equal(t, e.ID, m.EventID)
		assert.True(t, e.OccurredAt.Equal(m.OccurredAt))
		assert.NotEqual(t, uuid.Nil, m.UserID)
		assertNoPII(t, string(d.Body))
	}
}

// The broker goes away while events are appended and published: the runner
// retries the publisher until the broker is back, and every event reaches a
// durable queue declared before the restart. A notifier consuming through
// the restart sees every activation request once.
func TestPublisherAndNotifierSurviveBrokerRestart(t *testing.T) {
	// Not parallel: the restart would cut every other test's connections.
	url := brokerURL(t)
	ctl := rabbitmqctl(t)
	exchange, queue, nqueue := unique("x"), unique("q"), unique("nq")
	bindQueue(t, url, exchange, queue, "#", nil)
	cleanupTopology(t, url, exchange, nqueue)
	ctx := context.Background()

	// The notifier, consuming through the restart.
	var (
		notified = map[uuid.UUID]int{}
		nmu      sync.Mutex
	)
	notifier := integration.NewActivationNotifier(url, nqueue, func(_ context.Context, a integration.ActivationRequested) error {
		nmu.Lock()
		notified[a.EventID]++
		nmu.Unlock()
		return nil
	}, integration.NotifierOptions{Exchange: exchange, Logger: quiet(), RetryDelay: 50 * time.Millisecond, MaxRetryDelay: 500 * time.Millisecond})
	nctx, stopNotifier := context.WithCancel(ctx)
	ndone := make(chan error, 1)
	go func() { ndone <- notifier.Run(nctx) }()
	t.Cleanup(func() { stopNotifier(); <-ndone })
	require.Eventually(t, func() bool { return queueDepth(url, nqueue) >= 0 }, 10*time.Second, 20*time.Millisecond,
		"the notifier declares its queue")

	l := newLog(t)
	pub := integration.NewPublisher(url, integration.Options{Exchange: exchange, Logger: quiet(), ConfirmTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = pub.Close() })
	cp := &counting{Reactor: pub}
	r := startRunner(t, l, cp)

	// The appender: one event every few milliseconds until told to stop:
	// before, during and after the outage.
	type result struct {
		ids         []string
		activations []uuid.UUID
		last        eventstore.Position
		err         error
	}
	var appendedCount atomic.Int64
	stop, done := make(chan struct{}), make(chan result, 1)
	go func() {
		var res result
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- res
				return
			default:
			}
			uid := uuid.New()
			var e typed = user.Created{UserID: uid, Email: piiEmail, Name: piiName, Roles: []string{"member"}}
			if i%5 == 4 {
				e = user.ActivationRequested{UserID: uid, TokenHash: piiTokenHash, ExpiresAt: t0.Add(time.Hour), RequestedBy: "admin-1"}
			}
			evs, pos, err := l.append(ctx, batch{"user-" + uid.String(), []typed{e}})
			if err != nil {
				res.err = err
				<-stop
				done <- res
				return
			}
			res.ids = append(res.ids, evs[0].ID.String())
			if evs[0].Type == user.TypeActivationRequested {
				res.activations = append(res.activations, evs[0].ID)
			}
			res.last = pos
			appendedCount.Add(1)
			time.Sleep(3 * time.Millisecond)
		}
	}()
	stopAppender := sync.OnceValue(func() result { close(stop); return <-done })
	t.Cleanup(func() { stopAppender() })

	// Restart the broker mid-stream, once some messages are out.
	require.Eventually(t, func() bool { return reactorStatus(r, integration.PublisherName).Position.Commit >= 50 },
		10*time.Second, 5*time.Millisecond)
	t.Cleanup(func() { // whatever happens, leave the broker running
		cctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_ = ctl(cctx, "start_app")
		_ = ctl(cctx, "await_startup")
	})
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	atStop := reactorStatus(r, integration.PublisherName).Position
	beforeStop := appendedCount.Load()
	require.NoError(t, ctl(cctx, "stop_app"))
	stopped := time.Now()
	time.Sleep(500 * time.Millisecond) // appends go on; the publisher fails and retries
	require.NoError(t, ctl(cctx, "start_app"))
	require.NoError(t, ctl(cctx, "await_startup"))
	outage := time.Since(stopped)
	afterOutage := appendedCount.Load()
	// Keep appending a while with the broker back.
	require.Eventually(t, func() bool { return appendedCount.Load() >= afterOutage+100 }, 10*time.Second, 5*time.Millisecond)
	res := stopAppender()
	require.NoError(t, res.err)
	total := len(res.ids)
	t.Logf("broker stopped at publisher position %s for %s; events appended: %d before, %d during, %d after the outage",
		atStop, outage.Round(time.Millisecond), beforeStop, afterOutage-beforeStop, int64(total)-afterOutage)
	waitCheckpoint(t, r, integration.PublisherName, res.last, 30*time.Second)

	st := reactorStatus(r, integration.PublisherName)
	assert.Zero(t, st.Parked, "a broker outage parks nothing")
	fails := cp.failures()
	require.NotEmpty(t, fails, "the publisher must have noticed the restart")
	for _, err := range fails {
		assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	}
	t.Logf("publisher: %d failed attempts during the outage, e.g. %v", len(fails), fails[0])

	// Nothing lost: every event id is in the durable queue; duplicates are
	// only of ids we sent.
	c := collect(t, url, queue)
	require.Eventually(t, func() bool { return len(c.missing(res.ids)) == 0 && queueDepth(url, queue) == 0 },
		15*time.Second, 20*time.Millisecond, "missing %d ids", len(c.missing(res.ids)))
	time.Sleep(100 * time.Millisecond)
	sent := map[string]bool{}
	for _, id := range res.ids {
		sent[id] = true
	}
	got := c.deliveries()
	dups := 0
	seen := map[string]bool{}
	for _, d := range got {
		require.True(t, sent[d.MessageId], "message %s was never appended", d.MessageId)
		if seen[d.MessageId] {
			dups++
		}
		seen[d.MessageId] = true
	}
	t.Logf("consumed %d messages for %d events: %d duplicates (allowed: at least once)", len(got), total, dups)

	// The notifier reconnected and saw every activation request exactly once
	// (its window swallows the publisher's duplicates).
	require.Eventually(t, func() bool {
		nmu.Lock()
		defer nmu.Unlock()
		for _, id := range res.activations {
			if notified[id] == 0 {
				return false
			}
		}
		return true
	}, 15*time.Second, 20*time.Millisecond)
	nmu.Lock()
	defer nmu.Unlock()
	assert.Len(t, notified, len(res.activations))
	for id, n := range notified {
		assert.Equal(t, 1, n, "notified %s %d times", id, n)
	}
}

// A queue that refuses messages (full, overflow reject-publish) makes the
// broker nack: Handle reports the broker unavailable, so the runner retries.
func TestPublisherNackIsUnavailable(t *testing.T) {
	t.Parallel()
	url := brokerURL(t)
	exchange, queue := unique("x"), unique("q")
	bindQueue(t, url, exchange, queue, "#", amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	pub := integration.NewPublisher(url, integration.Options{Exchange: exchange, Logger: quiet()})
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	ctx := context.Background()

	first := recorded(t, user.Deleted{UserID: uuid.New(), DeletedBy: "system"}, t0)
	require.NoError(t, pub.Handle(ctx, first))
	second := recorded(t, user.Deleted{UserID: uuid.New(), DeletedBy: "system"}, t0)
	err := pub.Handle(ctx, second)
	require.Error(t, err)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
	assert.Contains(t, err.Error(), "nack")

	// Once the queue has room again the retry goes through on the same publisher.
	conn, ch := adminChannel(t, url)
	defer conn.Close()
	_, err = ch.QueuePurge(queue, false)
	require.NoError(t, err)
	require.NoError(t, pub.Handle(ctx, second))
}

func TestPublisherUnreachableBrokerIsUnavailable(t *testing.T) {
	t.Parallel()
	pub := integration.NewPublisher("amqp://guest:guest@127.0.0.1:1/", integration.Options{Logger: quiet(), DialTimeout: time.Second})
	defer pub.Close()
	err := pub.Handle(context.Background(), recorded(t, user.Deleted{UserID: uuid.New()}, t0))
	require.Error(t, err)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
}

func TestPublisherSkipsUnpublishedEventsWithoutConnecting(t *testing.T) {
	t.Parallel()
	pub := integration.NewPublisher("amqp://guest:guest@127.0.0.1:1/", integration.Options{Logger: quiet()})
	defer pub.Close()
	assert.Equal(t, integration.PublisherName, pub.Name())
	assert.Equal(t, "integration_publisher", pub.Name(), "the checkpoint key never changes")
	require.NoError(t, pub.Handle(context.Background(), recorded(t, email.Claimed{UserID: uuid.New()}, t0)))
	require.NoError(t, pub.Handle(context.Background(), eventstore.RecordedEvent{ID: uuid.New(), Type: "other.thing"}))
}

func TestPublisherUndecodableEventIsNotTransient(t *testing.T) {
	t.Parallel()
	pub := integration.NewPublisher("amqp://guest:guest@127.0.0.1:1/", integration.Options{Logger: quiet()})
	defer pub.Close()
	ev := recorded(t, user.Created{UserID: uuid.New()}, t0)
	ev.Data = []byte(`not json`)
	err := pub.Handle(context.Background(), ev)
	require.Error(t, err)
	assert.False(t, errors.Is(err, eventstore.ErrUnavailable), "retrying cannot fix it: the runner must park it")
}

func TestPublisherAfterCloseKeepsTheRunnerRetrying(t *testing.T) {
	t.Parallel()
	pub := integration.NewPublisher("amqp://guest:guest@127.0.0.1:1/", integration.Options{Logger: quiet()})
	require.NoError(t, pub.Close())
	err := pub.Handle(context.Background(), recorded(t, user.Deleted{UserID: uuid.New()}, t0))
	assert.ErrorIs(t, err, integration.ErrClosed)
	assert.ErrorIs(t, err, eventstore.ErrUnavailable)
}
