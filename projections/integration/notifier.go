package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"evident/domain/user"
)

// ActivationRequested is what ActivationNotifier hands its callback.
//
// It has no token, and cannot have one: the raw activation token is shown
// once, in the API's answer to the admin who asked for it, and only its hash
// is in the event log. A deployment that wants Evident to mail the token
// itself needs the token-issuing command to hand it over at issue time -
// e.g. to an outbox written with the command and drained to a private,
// access-controlled queue - not this public event. Until then a notification
// built from this event can only tell the user that an activation is waiting
// and until when (the admin passes the link on), or trigger a reminder.
type ActivationRequested struct {
	EventID    uuid.UUID
	UserID     uuid.UUID
	ExpiresAt  time.Time
	OccurredAt time.Time
}

// NotifierOptions tune an ActivationNotifier; the zero value works.
type NotifierOptions struct {
	// Exchange is the topic exchange the queue is bound to. Default DefaultExchange.
	Exchange string
	// Logger receives connection losses and failed or rejected messages.
	// Default slog.Default().
	Logger *slog.Logger
	// Prefetch is how many unacknowledged messages the broker sends ahead. Default 16.
	Prefetch int
	// DedupWindow is how many recently handled message ids are remembered.
	// Default 10000.
	DedupWindow int
	// RetryDelay is the first reconnect backoff (doubling, with jitter), and
	// the pause before a message whose notify failed is requeued. Default 100ms.
	RetryDelay time.Duration
	// MaxRetryDelay caps the reconnect backoff. Default 10s.
	MaxRetryDelay time.Duration
	// DialTimeout bounds connecting and the AMQP handshake. Default 5s.
	DialTimeout time.Duration
}

func (o NotifierOptions) withDefaults() NotifierOptions {
	if o.Exchange == "" {
		o.Exchange = DefaultExchange
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Prefetch <= 0 {
		o.Prefetch = 16
	}
	if o.DedupWindow <= 0 {
		o.DedupWindow = 10000
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = 100 * time.Millisecond
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = 10 * time.Second
	}
	o.MaxRetryDelay = max(o.MaxRetryDelay, o.RetryDelay)
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	return o
}

// ActivationNotifier consumes user.activation_requested messages from its
// own durable queue and calls notify once per message id.
//
// Delivery is at least once: the publisher may send a message twice, and a
// message whose ack was lost with the connection comes again. The notifier
// remembers the ids of the last DedupWindow messages it handled and acks a
// repeat without calling notify. That window lives in memory: it catches
// the duplicates of a broker hiccup, not those that span a restart of this
// process or a second instance. A consumer whose effect must happen once
// keeps the handled message ids in its own store, written in the same
// transaction as the effect (or makes the effect idempotent); this in-memory
// window only stands in for that here.
type ActivationNotifier struct {
	url    string
	queue  string
	notify func(context.Context, ActivationRequested) error
	opts   NotifierOptions
	log    *slog.Logger

	seen    *window // used by Run's goroutine only
	running atomic.Bool
}

// NewActivationNotifier returns a notifier that consumes from queue, bound to
// the exchange with routing key user.activation_requested. It does no I/O
// and starts nothing; Run does.
func NewActivationNotifier(url, queue string, notify func(context.Context, ActivationRequested) error, opts NotifierOptions) *ActivationNotifier {
	opts = opts.withDefaults()
	return &ActivationNotifier{url: url, queue: queue, notify: notify, opts: opts, log: opts.Logger,
		seen: newWindow(opts.DedupWindow)}
}

// Run consumes until ctx ends, then returns nil. While the broker is away it
// reconnects with capped exponential backoff, declaring the exchange, the
// queue and the binding again. Each message is acknowledged after notify
// returned nil; when notify fails, the message is requeued (after
// RetryDelay) and comes again. A message that cannot be read (not JSON,
// another type, a newer contract version) is rejected without requeue: it
// goes to the queue's dead-letter exchange if one is configured, else it is
// dropped. Run returns an error at once for a missing queue name or callback,
// or when it is already running.
func (n *ActivationNotifier) Run(ctx context.Context) error {
	if n.queue == "" || n.notify == nil {
		return errors.New("integration: notifier needs a queue name and a notify callback")
	}
	if !n.running.CompareAndSwap(false, true) {
		return errors.New("integration: notifier already running")
	}
	defer n.running.Store(false)
	attempt := 0
	for ctx.Err() == nil {
		consumed, err := n.consume(ctx)
		if ctx.Err() != nil {
			break
		}
		if consumed {
			attempt = 0
		}
		attempt++
		n.log.Warn("integration: notifier lost the broker; reconnecting",
			"queue", n.queue, "attempt", attempt, "err", err)
		sleep(ctx, backoff(n.opts.RetryDelay, n.opts.MaxRetryDelay, attempt))
	}
	return nil
}

// consume runs one connection until it fails or ctx ends. It reports whether
// it got as far as consuming, so that Run resets its backoff.
func (n *ActivationNotifier) consume(ctx context.Context) (bool, error) {
	conn, err := dial(ctx, n.url, n.opts.DialTimeout, "activation_notifier")
	if err != nil {
		return false, err
	}
	defer func() { _ = conn.CloseDeadline(time.Now().Add(n.opts.DialTimeout)) }()
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(n.opts.Prefetch, 0, false); err != nil {
		return false, fmt.Errorf("qos: %w", err)
	}
	if err := declareExchange(ch, n.opts.Exchange); err != nil {
		return false, err
	}
	if _, err := ch.QueueDeclare(n.queue, true, false, false, false, nil); err != nil {
		return false, fmt.Errorf("declare queue %q: %w", n.queue, err)
	}
	if err := ch.QueueBind(n.queue, user.TypeActivationRequested, n.opts.Exchange, false, nil); err != nil {
		return false, fmt.Errorf("bind queue %q: %w", n.queue, err)
	}
	deliveries, err := ch.Consume(n.queue, "", false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("consume %q: %w", n.queue, err)
	}
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case d, ok := <-deliveries:
			if !ok {
				return true, errors.New("delivery channel closed")
			}
			if err := n.handle(ctx, d); err != nil {
				return true, err
			}
		}
	}
}

// handle settles one delivery. It returns an error only when the ack or nack
// could not be sent (the channel is gone; the broker redelivers).
func (n *ActivationNotifier) handle(ctx context.Context, d amqp.Delivery) error {
	msg, ev, err := decodeActivation(d)
	if err != nil {
		n.log.Error("integration: rejecting unreadable message",
			"queue", n.queue, "message_id", d.MessageId, "event_type", d.Type, "err", err)
		return d.Reject(false)
	}
	id := d.MessageId
	if id == "" {
		id = msg.EventID.String()
	}
	if n.seen.has(id) {
		return d.Ack(false)
	}
	if err := n.notify(ctx, ev); err != nil {
		n.log.Warn("integration: notify failed; requeueing",
			"queue", n.queue, "message_id", id, "event_type", msg.Type, "err", err)
		// Pause so that a failing notify does not spin on one message.
		sleep(ctx, n.opts.RetryDelay)
		return d.Nack(false, true)
	}
	// Remember before acking: if the ack is lost with the connection, the
	// redelivery is recognised.
	n.seen.add(id)
	return d.Ack(false)
}

func decodeActivation(d amqp.Delivery) (Message, ActivationRequested, error) {
	var m Message
	if err := json.Unmarshal(d.Body, &m); err != nil {
		return m, ActivationRequested{}, fmt.Errorf("decode body: %w", err)
	}
	if m.Type != user.TypeActivationRequested {
		return m, ActivationRequested{}, fmt.Errorf("unexpected type %q", m.Type)
	}
	if m.Version < 1 || m.Version > ContractVersion {
		return m, ActivationRequested{}, fmt.Errorf("contract version %d is not %d", m.Version, ContractVersion)
	}
	var data ActivationRequestedData
	if err := json.Unmarshal(m.Data, &data); err != nil {
		return m, ActivationRequested{}, fmt.Errorf("decode data: %w", err)
	}
	if m.EventID == uuid.Nil || m.UserID == uuid.Nil {
		return m, ActivationRequested{}, errors.New("event_id or user_id missing")
	}
	return m, ActivationRequested{EventID: m.EventID, UserID: m.UserID, ExpiresAt: data.ExpiresAt, OccurredAt: m.OccurredAt}, nil
}

// window is a bounded set of recent message ids: adding one beyond its size
// forgets the oldest.
type window struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newWindow(size int) *window {
	return &window{ids: make(map[string]struct{}, size), ring: make([]string, size)}
}

func (w *window) has(id string) bool {
	_, ok := w.ids[id]
	return ok
}

func (w *window) add(id string) {
	if w.has(id) {
		return
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.ids, old)
	}
	w.ring[w.next] = id
	w.ids[id] = struct{}{}
	w.next = (w.next + 1) % len(w.ring)
}

// backoff is first doubled per attempt, capped, with jitter.
func backoff(first, limit time.Duration, attempt int) time.Duration {
	d := first
	for i := 1; i < attempt && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
