package integration_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"evident/domain/user"
	"evident/projections/integration"
)

// calls records the notifier's callback invocations.
type calls struct {
	mu     sync.Mutex
	tries  map[uuid.UUID]int
	ok     map[uuid.UUID]integration.ActivationRequested
	failOn map[uuid.UUID]int // fail the first n tries of these
}

func (c *calls) notify(_ context.Context, a integration.ActivationRequested) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tries[a.EventID]++
	if c.tries[a.EventID] <= c.failOn[a.EventID] {
		return errors.New("mail server down")
	}
	c.ok[a.EventID] = a
	return nil
}

func (c *calls) snapshot() (map[uuid.UUID]int, map[uuid.UUID]integration.ActivationRequested) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tries, ok := map[uuid.UUID]int{}, map[uuid.UUID]integration.ActivationRequested{}
	for k, v := range c.tries {
		tries[k] = v
	}
	for k, v := range c.ok {
		ok[k] = v
	}
	return tries, ok
}

func TestActivationNotifierDeduplicatesRetriesAndAcks(t *testing.T) {
	t.Parallel()
	url := brokerURL(t)
	exchange, queue := unique("x"), unique("nq")
	cleanupTopology(t, url, exchange, queue)
	ctx := context.Background()

	uid := uuid.New()
	exp := t0.Add(24 * time.Hour)
	dup := recorded(t, user.ActivationRequested{UserID: uid, TokenHash: piiTokenHash, ExpiresAt: exp, RequestedBy: "admin-1"}, t0)
	flaky := recorded(t, user.ActivationRequested{UserID: uuid.New(), TokenHash: piiTokenHash, ExpiresAt: exp, RequestedBy: "admin-1"}, t0)
	c := &calls{tries: map[uuid.UUID]int{}, ok: map[uuid.UUID]integration.ActivationRequested{},
		failOn: map[uuid.UUID]int{flaky.ID: 2}}

	n := integration.NewActivationNotifier(url, queue, c.notify,
		integration.NotifierOptions{Exchange: exchange, Logger: quiet(), RetryDelay: 10 * time.Millisecond})
	nctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(nctx) }()
	stopped := false
	stopNotifier := func() {
		if !stopped {
			stop()
			require.NoError(t, <-done)
			stopped = true
		}
	}
	t.Cleanup(stopNotifier)
	require.Eventually(t, func() bool { return queueDepth(url, queue) >= 0 }, 10*time.Second, 20*time.Millisecond,
		"Run declares the queue")

	// Real messages from the publisher; the duplicate is what a retried
	// publish after a lost confirm looks like (same message id).
	pub := integration.NewPublisher(url, integration.Options{Exchange: exchange, Logger: quiet()})
	t.Cleanup(func() { _ = pub.Close() })
	require.NoError(t, pub.Handle(ctx, dup))
	require.NoError(t, pub.Handle(ctx, dup))
	require.NoError(t, pub.Handle(ctx, flaky))
	// Another event type on the same exchange is not routed to the queue.
	require.NoError(t, pub.Handle(ctx, recorded(t, user.Deleted{UserID: uid, DeletedBy: "system"}, t0)))
	// A message it cannot read is rejected, not requeued and not notified.
	conn, ch := adminChannel(t, url)
	defer conn.Close()
	require.NoError(t, ch.PublishWithContext(ctx, exchange, user.TypeActivationRequested, false, false,
		amqp.Publishing{MessageId: uuid.NewString(), ContentType: "application/json", Body: []byte(`{"type":"user.activation_requested","version":2}`)}))
	require.NoError(t, pub.Handle(ctx, dup)) // and a late third copy

	require.Eventually(t, func() bool {
		_, ok := c.snapshot()
		return len(ok) == 2 && queueDepth(url, queue) == 0
	}, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // let the last copy arrive, if it were to be notified
	stopNotifier()                     // closing the connection would requeue anything unacked

	tries, ok := c.snapshot()
	assert.Equal(t, 1, tries[dup.ID], "three copies, one notification")
	assert.Equal(t, 3, tries[flaky.ID], "two failures requeued, then success")
	assert.Len(t, tries, 2, "nothing else was notified")
	assert.Equal(t, integration.ActivationRequested{EventID: dup.ID, UserID: uid, ExpiresAt: exp, OccurredAt: t0}, ok[dup.ID])
	assert.Equal(t, 0, queueDepth(url, queue), "everything was acked or rejected")
}

func TestActivationNotifierRefusesMisconfiguration(t *testing.T) {
	t.Parallel()
	n := integration.NewActivationNotifier("amqp://127.0.0.1:1/", "", nil, integration.NotifierOptions{})
	require.Error(t, n.Run(context.Background()))
}

func TestActivationNotifierKeepsRetryingUntilCancelled(t *testing.T) {
	t.Parallel()
	n := integration.NewActivationNotifier("amqp://guest:guest@127.0.0.1:1/", "q",
		func(context.Context, integration.ActivationRequested) error { return nil },
		integration.NotifierOptions{Logger: quiet(), RetryDelay: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.NoError(t, n.Run(ctx), "an unreachable broker is retried, not returned")
}
