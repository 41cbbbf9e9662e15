package integration_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// brokerURL is the test broker, e.g. amqp://guest:guest@127.0.0.1:5672/.
// Without EVIDENT_TEST_AMQP_URL the test is skipped, unless
// EVIDENT_TEST_REQUIRE_AMQP=1 says the broker must be there.
func brokerURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("EVIDENT_TEST_AMQP_URL")
	if url == "" {
		if os.Getenv("EVIDENT_TEST_REQUIRE_AMQP") == "1" {
			t.Fatal("EVIDENT_TEST_REQUIRE_AMQP=1 but EVIDENT_TEST_AMQP_URL is not set")
		}
		t.Skip("EVIDENT_TEST_AMQP_URL is not set (e.g. amqp://guest:guest@127.0.0.1:5672/); skipping RabbitMQ tests")
	}
	return url
}

// unique names an exchange or a queue of one test, so tests run in parallel
// and runs do not see each other's leftovers.
func unique(prefix string) string {
	return "evident-test." + prefix + "." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
}

// adminChannel opens a connection for the test's own declarations and reads.
func adminChannel(t *testing.T, url string) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	ch, err := conn.Channel()
	require.NoError(t, err)
	return conn, ch
}

// bindQueue declares a durable queue bound to the (durable topic) exchange
// with key, and deletes both when the test ends.
func bindQueue(t *testing.T, url, exchange, queue, key string, args amqp.Table) {
	t.Helper()
	conn, ch := adminChannel(t, url)
	defer conn.Close()
	require.NoError(t, ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil))
	_, err := ch.QueueDeclare(queue, true, false, false, false, args)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(queue, key, exchange, false, nil))
	cleanupTopology(t, url, exchange, queue)
}

// cleanupTopology deletes the queue and the exchange when the test ends (they
// are durable). The broker may be restarting then, so it retries briefly.
func cleanupTopology(t *testing.T, url, exchange, queue string) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			conn, err := amqp.Dial(url)
			if err == nil {
				ch, cerr := conn.Channel()
				if cerr == nil {
					_, _ = ch.QueueDelete(queue, false, false, false)
					_ = ch.ExchangeDelete(exchange, false, false)
				}
				_ = conn.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Logf("cannot delete %s / %s: %v", queue, exchange, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// queueDepth is the number of ready messages in queue; -1 when it does not
// exist or the broker cannot be asked (safe inside require.Eventually).
func queueDepth(url, queue string) int {
	conn, err := amqp.Dial(url)
	if err != nil {
		return -1
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return -1
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return q.Messages
}

// collector consumes a queue (auto-ack) and keeps every delivery.
type collector struct {
	mu   sync.Mutex
	got  []amqp.Delivery
	byID map[string]int
}

func collect(t *testing.T, url, queue string) *collector {
	t.Helper()
	conn, ch := adminChannel(t, url)
	t.Cleanup(func() { _ = conn.Close() })
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	require.NoError(t, err)
	c := &collector{byID: map[string]int{}}
	go func() {
		for d := range deliveries {
			c.mu.Lock()
			c.got = append(c.got, d)
			c.byID[d.MessageId]++
			c.mu.Unlock()
		}
	}()
	return c
}

// missing returns the ids not received yet.
func (c *collector) missing(ids []string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range ids {
		if c.byID[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

func (c *collector) deliveries() []amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp.Delivery(nil), c.got...)
}

// rabbitmqctl runs rabbitmqctl with args, or skips the test when it is not
// installed (it restarts the broker, so it must run beside it).
func rabbitmqctl(t *testing.T) func(ctx context.Context, args ...string) error {
	t.Helper()
	path, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		if os.Getenv("EVIDENT_TEST_REQUIRE_AMQP") == "1" {
			t.Fatal("EVIDENT_TEST_REQUIRE_AMQP=1 but rabbitmqctl is not on PATH; the restart test needs it")
		}
		t.Skip("rabbitmqctl is not on PATH; cannot restart the broker")
	}
	return func(ctx context.Context, args ...string) error {
		out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
		if err != nil {
			t.Logf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return err
	}
}
