package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"evident/api"
	"evident/commands"
	"evident/domain/user"
	"evident/eventstore"
	"evident/projections"
	"evident/projections/integration"
	"evident/readmodels"
)

// Main is the whole service, wired from a Config exactly as production runs
// it; the black-box tests start the real binary, which runs this.
type Main struct {
	cfg    Config
	log    *slog.Logger
	stores *stores
	events eventstore.Store
	rm     *readmodels.Store
	cmd    *commands.Handler
	runner *projections.Runner
	expiry *commands.Expiry
	api    *api.Server
	// publisher sends integration events when EVIDENT_AMQP_URL is set.
	publisher *integration.Publisher
}

// lateWaiter breaks the knot between the handler (whose deactivations wait
// for the sessions projection) and the runner (whose workflows call the handler).
type lateWaiter struct{ r *projections.Runner }

func (w *lateWaiter) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return w.r.WaitFor(ctx, pos)
}

// Open wires stores → handler → projections → HTTP. It starts no goroutine.
// exclusive takes the embedded store's lock: one serving process per file.
// The other opens are the read-only tools', which need the store to exist:
// pointed at the wrong directory, they would create an empty store and
// report that the stream or user is not in it.
func Open(ctx context.Context, cfg Config, log *slog.Logger, exclusive bool) (*Main, error) {
	if !exclusive && cfg.backend() == embedded {
		file := cfg.embeddedFile()
		if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no embedded store at %s: give the serving process's directory (--data-dir or EVIDENT_DATA_DIR)", file)
		}
	}
	st, err := openStores(ctx, cfg, exclusive)
	if err != nil {
		return nil, err
	}
	m := &Main{cfg: cfg, log: log, stores: st, events: st.events, rm: st.rm}
	if exclusive && cfg.backend() == embedded {
		// This process alone uses the file: a pending idempotency claim is
		// the remains of a request that died with an earlier process.
		if n, err := st.rm.AbandonPendingIdempotent(ctx); err != nil {
			st.Close()
			return nil, err
		} else if n > 0 {
			log.Info("freed idempotency keys of requests that died", "count", n)
		}
	}

	reg, appended := newRegistry()
	waiter := &lateWaiter{}
	var open commands.OpenSessions
	if cfg.EnableSessionCleanup {
		open = m.rm
	}
	m.cmd = commands.NewHandler(m.events, m.rm, open, waiter, commands.Options{
		ActivationTokenDuration: cfg.ActivationTokenDuration,
		SessionDuration:         cfg.SessionDuration,
		MaxRetries:              cfg.MaxRetries,
		PasswordCost:            cfg.PasswordCost,
		Logger:                  log,
		Appended:                func(t string) { appended.WithLabelValues(t).Inc() },
	})
	var reactors []projections.Reactor
	if cfg.EnableSessionCleanup {
		reactors = append(reactors, commands.NewSessionCleanup(m.cmd, cfg.SessionCleanupTimeout))
	}
	if cfg.EnableAutoActivation {
		reactors = append(reactors, commands.NewAutoActivation(m.cmd))
	}
	if cfg.AMQPURL != "" {
		m.publisher = integration.NewPublisher(cfg.AMQPURL, integration.Options{Logger: log})
		reactors = append(reactors, m.publisher)
	}
	opts := projections.Options{MaxRetries: cfg.MaxRetries, RetryDelay: cfg.RetryDelay, Logger: log, Reactors: reactors}
	if st.leases != nil {
		opts.Leases = projections.StoreLeases(st.leases)
	}
	m.runner = projections.NewRunner(m.events, m.rm, cfg.projections(), opts)
	waiter.r = m.runner
	m.expiry = commands.NewExpiry(m.cmd, m.rm, time.Second)
	reg.MustRegister(newWorkerCollector(m.runner, m.events))
	m.api = api.NewServer(m.cmd, m.rm, readSide{m}, api.Options{WaitTimeout: cfg.ReadWaitTimeout, Logger: log, Registry: reg})
	return m, nil
}

// Serve runs projections, workflows and HTTP until ctx ends, then drains
// HTTP and stops the rest.
func (m *Main) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", m.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := m.runner.Run(bg); err != nil && bg.Err() == nil {
			m.log.Error("projections stopped", "err", err)
		}
	})
	wg.Go(func() { _ = m.expiry.Run(bg) })

	if err := m.bootstrapAdmin(ctx); err != nil {
		stop()
		wg.Wait()
		ln.Close()
		return err
	}

	srv := &http.Server{Handler: m.api, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	m.log.Info("evident serving", "addr", ln.Addr().String(), "store", m.cfg.storeName())

	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err = srv.Shutdown(sctx)
		cancel()
	}
	stop()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// bootstrapAdmin makes sure the configured first admin exists and is active.
func (m *Main) bootstrapAdmin(ctx context.Context) error {
	if m.cfg.BootstrapAdminEmail == "" {
		return nil
	}
	meta := commands.Meta{ActorID: commands.System}
	res, err := m.cmd.Register(ctx, meta, commands.RegisterInput{
		Email: m.cfg.BootstrapAdminEmail, Name: "Administrator", Password: m.cfg.BootstrapAdminPassword, Roles: []string{user.RoleAdmin},
	})
	id := res.UserID
	if errors.Is(err, commands.ErrEmailTaken) {
		// Made on an earlier start. Finish an activation a crash may have
		// cut short; what admins did to the account since is theirs.
		if id, err = m.cmd.EmailOwner(ctx, m.cfg.BootstrapAdminEmail); err != nil {
			return fmt.Errorf("bootstrap admin: %w", err)
		}
		st, _, err := m.cmd.UserState(ctx, id, time.Time{})
		if err != nil {
			return err
		}
		if !slices.Contains(st.Roles, user.RoleAdmin) {
			// Someone else registered the address first (only an admin
			// gives roles): activating that account would let its
			// registrant in, with no admin made.
			m.log.Error("bootstrap admin not made: its address belongs to a user who is not an admin; choose another address, or have an admin grant the role",
				"user_id", id.String(), "status", st.Status)
			return nil
		}
		if st.Status != user.StatusPending {
			m.log.Info("bootstrap admin exists; EVIDENT_BOOTSTRAP_ADMIN_PASSWORD is used only when it is made, and was not applied",
				"user_id", id.String(), "status", st.Status)
			return nil
		}
	} else if err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	if _, err := m.cmd.Activate(ctx, meta, id, user.MethodAdmin, nil); err != nil {
		return fmt.Errorf("bootstrap admin: %w", err)
	}
	m.log.Info("bootstrap admin ready", "user_id", id.String())
	return nil
}

// Close releases everything Open acquired.
func (m *Main) Close() error {
	var errs []error
	if m.publisher != nil {
		errs = append(errs, m.publisher.Close())
	}
	errs = append(errs, m.stores.Close())
	return errors.Join(errs...)
}

// readSide is what the API asks of the projections.
type readSide struct{ m *Main }

func (r readSide) WaitFor(ctx context.Context, pos eventstore.Position) error {
	return r.m.runner.WaitFor(ctx, pos)
}

// Ready is false while the store cannot be read or a projection is failing
// or far behind (on a standby instance: its committed checkpoint, kept by
// the process holding its lease, is far behind). Workflows do not count: queries are still right while one
// waits for a broker; /v1/workflows/status shows them.
func (r readSide) Ready(ctx context.Context) error {
	if err := r.m.stores.ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, s := range r.m.runner.Status() {
		if s.Kind != projections.KindProjection {
			continue
		}
		pos := s.Position
		switch {
		case s.Standby:
			// Another process holds the lease: this one serves the tables
			// that process keeps, as far as its committed checkpoint.
			cp, err := r.m.rm.Checkpoint(ctx, s.Name)
			if err != nil {
				return fmt.Errorf("store: %w", err)
			}
			pos = cp
		case !s.Running:
			return fmt.Errorf("%s %s is not running", s.Kind, s.Name)
		case s.LastError != "":
			return fmt.Errorf("%s %s is failing: %s", s.Kind, s.Name, s.LastError)
		}
		n, age, err := lag(ctx, r.m.events, pos, time.Now())
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if n >= lagWindow || age > maxReadyLag {
			return fmt.Errorf("%s %s is far behind: %d+ events, %s", s.Kind, s.Name, n, age.Round(time.Millisecond))
		}
	}
	return nil
}

// maxReadyLag is how old the oldest unprocessed event may be while ready.
const maxReadyLag = 30 * time.Second

func (r readSide) Status(ctx context.Context) any {
	store := "ok"
	if err := r.m.stores.ping(ctx); err != nil {
		store = err.Error()
	}
	return map[string]any{"store": store, "workers": r.m.runner.Status()}
}

func (r readSide) Parked(ctx context.Context) ([]readmodels.ParkedEvent, error) {
	return r.m.rm.Parked(ctx)
}

func (r readSide) RetryParked(ctx context.Context, worker, eventID string) error {
	return r.m.runner.RetryParked(ctx, worker, eventID)
}

func (r readSide) SkipParked(ctx context.Context, worker, eventID string) error {
	return r.m.runner.SkipParked(ctx, worker, eventID)
}
