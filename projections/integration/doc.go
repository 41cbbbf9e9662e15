// Package integration publishes Evident's public integration events to
// RabbitMQ and holds a consumer that shows how other services use them.
//
// The event log is private: its events carry e-mail addresses, names, token
// hashes and credential ids, and their shapes may change with an upcaster.
// Integration events are the public contract derived from it: versioned
// (Message.Version), PII-light, one message per domain event, on a durable
// topic exchange with the event type as routing key.
//
// The Publisher is a projections.Reactor: the Runner hands it every event in
// log order, at least once, and moves its checkpoint only after Handle
// returned. Handle returns only once the broker has confirmed the message
// (publisher confirms, persistent delivery), so a checkpoint never passes a
// message the broker has not taken responsibility for. A broker that cannot
// be reached, or that refuses a message, yields an error wrapping
// eventstore.ErrUnavailable, which the Runner retries without end. Delivery
// is therefore at least once: after a lost confirm or a crash between
// confirm and checkpoint a message is sent again with the same message id
// (the event id), and consumers deduplicate by it.
//
// ActivationNotifier is the example consumer: it turns
// user.activation_requested messages into notifications. Publishing is off
// unless EVIDENT_AMQP_URL is set; cmd/ reads that, this package reads no
// environment.
package integration
