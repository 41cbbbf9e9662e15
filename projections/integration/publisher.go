package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"evident/eventstore"
	"evident/projections"
)

// Defaults and fixed values of the wire format.
const (
	// DefaultExchange is the durable topic exchange integration events go to.
	DefaultExchange = "evident.events"
	// PublisherName is the Publisher's reactor name: its checkpoint key.
	// Renaming it republishes the whole log.
	PublisherName = "integration_publisher"
	// AppID is the AMQP app-id property of every message.
	AppID = "evident"
	// ContentType is the AMQP content-type property of every message.
	ContentType = "application/json"

	// HeaderCorrelationID carries the event's correlation id.
	HeaderCorrelationID = "correlation_id"
	// HeaderSchemaVersion carries the contract version (Message.Version), so a
	// consumer can route or reject a message before parsing it.
	HeaderSchemaVersion = "schema_version"
)

// ErrClosed is returned (wrapped with eventstore.ErrUnavailable, so a Runner
// still running keeps retrying rather than parking) after Close.
var ErrClosed = errors.New("integration: publisher closed")

var _ projections.Reactor = (*Publisher)(nil)

// Options tune a Publisher; the zero value works.
type Options struct {
	// Exchange is the topic exchange to publish to. Default DefaultExchange.
	Exchange string
	// Logger receives connects and broker alarms. Default slog.Default().
	Logger *slog.Logger
	// ConfirmTimeout bounds the wait for the broker's confirm of one message.
	// When it passes, the connection is dropped and Handle fails: the message
	// may still have been routed, so it is sent again (a duplicate). Default 10s.
	ConfirmTimeout time.Duration
	// DialTimeout bounds connecting and the AMQP handshake. Default 5s.
	DialTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Exchange == "" {
		o.Exchange = DefaultExchange
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ConfirmTimeout <= 0 {
		o.ConfirmTimeout = 10 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	return o
}

// Publisher sends one integration message per published domain event to a
// RabbitMQ topic exchange. It is a projections.Reactor: register it with
// projections.Options.Reactors. Build it with NewPublisher; it connects on
// the first Handle and reconnects on the first Handle after a failure.
type Publisher struct {
	url  string
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	cur    *link // nil while disconnected
	closed bool
}

// link is one connection with its confirm-mode channel.
type link struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	blocked atomic.Bool // the broker has blocked publishers (resource alarm)
}

// NewPublisher returns a Publisher for the broker at url
// (amqp://user:pass@host:5672/vhost). It does no I/O and starts nothing.
func NewPublisher(url string, opts Options) *Publisher {
	opts = opts.withDefaults()
	return &Publisher{url: url, opts: opts, log: opts.Logger}
}

// Name is the reactor's checkpoint key.
func (p *Publisher) Name() string { return PublisherName }

// Handle publishes ev's integration message, routing key = event type, and
// returns nil once the broker has confirmed it. Events that are not
// published (e-mail claims, unknown types) return nil at once. An event that
// cannot be decoded returns a plain error (the Runner parks it after its
// retries). Every broker failure - cannot connect, channel or connection
// closed, no confirm within ConfirmTimeout, a nack, publishers blocked -
// returns an error wrapping eventstore.ErrUnavailable, and the next Handle
// reconnects. When ctx ends, ctx.Err() is returned.
func (p *Publisher) Handle(ctx context.Context, ev eventstore.RecordedEvent) error {
	msg, md, ok, err := newMessage(ev)
	if err != nil || !ok {
		return err
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("integration: encode %s: %w", ev.Type, err)
	}
	pub := amqp.Publishing{
		Headers: amqp.Table{
			HeaderCorrelationID: md.CorrelationID,
			HeaderSchemaVersion: int32(msg.Version),
		},
		ContentType:   ContentType,
		DeliveryMode:  amqp.Persistent,
		CorrelationId: md.CorrelationID,
		MessageId:     ev.ID.String(),
		Timestamp:     msg.OccurredAt,
		Type:          ev.Type,
		AppId:         AppID,
		Body:          body,
	}

	l, err := p.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return unavailable("connect", err)
	}
	if l.blocked.Load() {
		// A blocked broker stops reading the socket; a publish now would
		// hang in a write that no context can interrupt.
		return unavailable("publish", errors.New("broker has blocked publishers (resource alarm)"))
	}
	dc, err := l.ch.PublishWithDeferredConfirmWithContext(ctx, p.opts.Exchange, ev.Type, false, false, pub)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.drop(l)
		return unavailable("publish", err)
	}
	wctx, cancel := context.WithTimeout(ctx, p.opts.ConfirmTimeout)
	defer cancel()
	acked, err := dc.WaitContext(wctx)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		// The message may be on its way; drop the link so that its late
		// confirm cannot be mistaken for the retry's.
		p.drop(l)
		return unavailable("confirm", fmt.Errorf("no confirm within %s", p.opts.ConfirmTimeout))
	case !acked:
		// A nack, or the channel closed with the confirm outstanding (the
		// library nacks what is pending then).
		if l.ch.IsClosed() {
			p.drop(l)
		}
		return unavailable("confirm", errors.New("broker did not take the message (nack)"))
	}
	return nil
}

// Close closes the connection, if any. Handle fails after Close.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.cur == nil {
		return nil
	}
	err := p.cur.close(p.opts.DialTimeout)
	p.cur = nil
	if err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("integration: close: %w", err)
	}
	return nil
}

// connect returns the live link, dialling a new one when there is none or
// the last one died.
func (p *Publisher) connect(ctx context.Context) (*link, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if l := p.cur; l != nil {
		if !l.conn.IsClosed() && !l.ch.IsClosed() {
			return l, nil
		}
		_ = l.close(p.opts.DialTimeout)
		p.cur = nil
	}
	conn, err := dial(ctx, p.url, p.opts.DialTimeout, PublisherName)
	if err != nil {
		return nil, err
	}
	l := &link{conn: conn}
	if err := l.setup(p.opts.Exchange); err != nil {
		_ = l.close(p.opts.DialTimeout)
		return nil, err
	}
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	go func() { // ends when the connection closes (the library closes blocks)
		for b := range blocks {
			l.blocked.Store(b.Active)
			if b.Active {
				p.log.Warn("integration: broker blocked publishers", "reason", b.Reason)
			} else {
				p.log.Info("integration: broker unblocked publishers")
			}
		}
	}()
	p.log.Info("integration: connected to the broker", "projection", PublisherName, "exchange", p.opts.Exchange)
	p.cur = l
	return l, nil
}

// setup opens the channel, declares the exchange and turns on confirms.
func (l *link) setup(exchange string) error {
	ch, err := l.conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	l.ch = ch
	if err := declareExchange(ch, exchange); err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	return nil
}

func (l *link) close(timeout time.Duration) error {
	return l.conn.CloseDeadline(time.Now().Add(timeout))
}

// drop forgets l (if it is still the current link) and closes it, so that
// the next Handle dials afresh.
func (p *Publisher) drop(l *link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == l {
		p.cur = nil
	}
	_ = l.close(p.opts.DialTimeout)
}

// declareExchange declares the durable topic exchange. Publisher and
// consumers declare it alike (a mismatch would be a channel error), so
// either may start first.
func declareExchange(ch *amqp.Channel, name string) error {
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", name, err)
	}
	return nil
}

// dial connects with a handshake bounded by timeout and a TCP connect that
// also ends with ctx.
func dial(ctx context.Context, url string, timeout time.Duration, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("evident " + name)
	conn, err := amqp.DialConfig(url, amqp.Config{
		Properties: props,
		// Heartbeats notice a broker that vanished without closing the
		// socket (a partition); the server's default would take minutes.
		Heartbeat: 10 * time.Second,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Cleared by the library once the handshake is done.
			if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return conn, nil
}

// unavailableError is a broker failure: it wraps eventstore.ErrUnavailable,
// which the projections Runner retries without end (never parking).
type unavailableError struct {
	op  string
	err error
}

func unavailable(op string, err error) error { return &unavailableError{op: op, err: err} }

func (e *unavailableError) Error() string {
	return "integration: " + e.op + ": broker unavailable: " + e.err.Error()
}

func (e *unavailableError) Unwrap() []error { return []error{eventstore.ErrUnavailable, e.err} }
