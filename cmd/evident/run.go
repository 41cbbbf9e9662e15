package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"evident/eventstore"
	"evident/projections"

	"github.com/google/uuid"
)

const usage = `usage: evident <command> [flags]

commands:
  serve                       run the HTTP API, projections and workflows
  migrate                     apply the stores' schema migrations and exit (serve does it too)
  rebuild [projection…]       rebuild read models from position zero (all, or the named:
                              users, sessions, activation_tokens, audit); on SQLite stop serve first
  stream <stream>             print a stream's events as JSON lines (e.g. user-<id>)
  state <user-id> [--at T]    fold a user's stream up to RFC 3339 time T (default: now)

flags (every command): --data-dir DIR, --http-addr ADDR; see README for the environment.`

// run dispatches a subcommand; out receives the tools' output.
func run(ctx context.Context, args []string) error {
	return dispatch(ctx, args, os.Stdout)
}

func dispatch(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(out, usage)
		return nil
	}
	name, rest := args[0], args[1:]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	at := ""
	if name == "state" {
		fs.StringVar(&at, "at", "", "RFC 3339 time to fold the stream up to")
	}
	flagArgs, positional := splitArgs(rest)
	cfg, err := loadConfig(flagArgs, fs)
	if err != nil {
		return err
	}
	level, _ := cfg.level()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// What logs to slog's default (a rebuild's progress, say) writes the
	// same JSON lines.
	slog.SetDefault(log)
	for _, name := range cfg.Unknown {
		log.Warn("ignoring an unknown setting; is it misspelt?", "variable", name)
	}

	switch name {
	case "serve":
		if len(positional) > 0 {
			return fmt.Errorf("serve takes no arguments, got %q", positional)
		}
		m, err := Open(ctx, cfg, log, true)
		if err != nil {
			return err
		}
		defer m.Close()
		return m.Serve(ctx)
	case "migrate":
		st, err := openStores(ctx, cfg, false)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "migrations applied")
		return st.Close()
	case "rebuild":
		return rebuild(ctx, cfg, log, positional, out)
	case "stream":
		if len(positional) != 1 {
			return errors.New("usage: evident stream <stream>")
		}
		return printStream(ctx, cfg, log, positional[0], out)
	case "state":
		if len(positional) != 1 {
			return errors.New("usage: evident state <user-id> [--at T]")
		}
		return printState(ctx, cfg, log, positional[0], at, out)
	}
	return fmt.Errorf("unknown command %q\n%s", name, usage)
}

// splitArgs lets flags and positional arguments come in any order.
func splitArgs(args []string) (flags, positional []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		if !strings.Contains(a, "=") && i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, positional
}

func rebuild(ctx context.Context, cfg Config, log *slog.Logger, names []string, out io.Writer) error {
	m, err := Open(ctx, cfg, log, true)
	if err != nil {
		return err
	}
	defer m.Close()
	all := cfg.projections()
	selected := all
	if len(names) > 0 {
		selected = nil
		for _, n := range names {
			i := slices.IndexFunc(all, func(p projections.Projection) bool { return p.Name() == n })
			if i < 0 {
				return fmt.Errorf("unknown projection %q (have users, sessions, activation_tokens, audit)", n)
			}
			selected = append(selected, all[i])
		}
	}
	start := time.Now()
	if err := projections.Rebuild(ctx, m.events, m.rm, selected); err != nil {
		return err
	}
	for _, p := range selected {
		pos, err := m.rm.Checkpoint(ctx, p.Name())
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "rebuilt %s to position %s\n", p.Name(), pos)
	}
	fmt.Fprintf(out, "done in %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// streamLine is one event as `evident stream` prints it.
type streamLine struct {
	Stream     string              `json:"stream"`
	Version    int64               `json:"version"`
	Position   eventstore.Position `json:"position"`
	EventID    uuid.UUID           `json:"event_id"`
	Type       string              `json:"type"`
	RecordedAt time.Time           `json:"recorded_at"`
	Data       json.RawMessage     `json:"data"`
	Metadata   json.RawMessage     `json:"metadata"`
}

func printStream(ctx context.Context, cfg Config, log *slog.Logger, stream string, out io.Writer) error {
	m, err := Open(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer m.Close()
	evs, err := m.events.ReadStream(ctx, stream, 0)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return fmt.Errorf("stream %q has no events", stream)
	}
	enc := json.NewEncoder(out)
	for _, e := range evs {
		if err := enc.Encode(streamLine{Stream: e.Stream, Version: e.Version, Position: e.Position, EventID: e.ID,
			Type: e.Type, RecordedAt: e.RecordedAt.UTC(), Data: e.Data, Metadata: e.Metadata}); err != nil {
			return err
		}
	}
	return nil
}

func printState(ctx context.Context, cfg Config, log *slog.Logger, rawID, rawAt string, out io.Writer) error {
	id, err := uuid.Parse(strings.TrimPrefix(rawID, "user-"))
	if err != nil {
		return fmt.Errorf("user id %q is not a UUID", rawID)
	}
	var at time.Time
	if rawAt != "" {
		if at, err = time.Parse(time.RFC3339Nano, rawAt); err != nil {
			return fmt.Errorf("--at %q: use RFC 3339, e.g. 2026-01-02T15:04:05Z", rawAt)
		}
	}
	m, err := Open(ctx, cfg, log, false)
	if err != nil {
		return err
	}
	defer m.Close()
	st, version, err := m.cmd.UserState(ctx, id, at)
	if err != nil {
		return err
	}
	var atv *time.Time
	if !at.IsZero() {
		atv = &at
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{
		"id": st.ID, "email": st.Email, "name": st.Name, "roles": st.Roles, "status": st.Status,
		"version": version, "at": atv, "pending_tokens": len(st.PendingTokens()),
	})
}
