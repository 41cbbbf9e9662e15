package kurrentdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/kurrent-io/KurrentDB-Client-Go/kurrentdb"

	"evident/eventstore"
)

// Store is the event log in KurrentDB or EventStoreDB.
//
// Streams and versions are the server's own: a stream's version is the
// revision of its last event. Positions are the server's commit/prepare
// pairs. $all is in commit order and appended to only, so a read "after
// position N" never skips an event that commits later with a lower position.
type Store struct {
	url    string // redacted, for messages
	conf   *kurrentdb.Configuration
	opts   Options
	filter filter
	src    source
	bo     backoff

	mu     sync.Mutex
	cur    *kurrentdb.Client
	closed bool
}

var _ eventstore.Store = (*Store)(nil)

// New connects to the server named by url (see ValidateURL) with the default
// Options. See NewWithOptions.
func New(ctx context.Context, url string) (*Store, error) {
	return NewWithOptions(ctx, url, Options{})
}

// NewWithOptions connects to the server named by url and checks that it
// answers, waiting at most opts.ConnectTimeout (and no longer than ctx).
//
// Errors: a bad connection string or bad options, before any I/O; an error
// wrapping eventstore.ErrUnavailable when the server cannot be reached in
// time; the server's refusal (bad credentials, no permission to read $all)
// as it came.
func NewWithOptions(ctx context.Context, url string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kurrentdb eventstore: options: %w", err)
	}
	opts = opts.withDefaults()
	conf, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	conf.Logger = func(level kurrentdb.LogLevel, format string, args ...any) {
		log.Debug("kurrentdb client: "+fmt.Sprintf(format, args...), slog.String("level_of_client", level))
	}
	c, err := kurrentdb.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("kurrentdb eventstore: %s: %w", Redact(url), err)
	}
	s := &Store{
		url:    Redact(url),
		conf:   conf,
		opts:   opts,
		filter: newFilter(opts),
		bo:     defaultBackoff,
		cur:    c,
	}
	s.src = clientSource{s}

	if err := s.ping(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return s, nil
}

// ping reads the last event of $all: it makes the client find the server,
// and checks the permission that ReadAll, Wait and Subscribe need.
func (s *Store) ping(parent context.Context) error {
	wait := s.opts.ConnectTimeout
	if d, ok := parent.Deadline(); ok && time.Until(d) < wait {
		wait = max(time.Until(d), 0).Round(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(parent, wait)
	defer cancel()
	c, err := s.client()
	if err != nil {
		return err
	}
	rs, err := c.ReadAll(ctx, kurrentdb.ReadAllOptions{Direction: kurrentdb.Backwards, From: kurrentdb.End{}}, 1)
	if err == nil {
		defer rs.Close()
		_, err = rs.Recv()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err == nil {
		return nil
	}
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("kurrentdb eventstore: connect to %s: %w", s.url, perr)
	}
	mapped := mapError(ctx, "connect to "+s.url, err)
	if ctx.Err() != nil || errors.Is(mapped, eventstore.ErrUnavailable) {
		return fmt.Errorf("kurrentdb eventstore: cannot reach %s (waited at most %s): %w (%w)", s.url, wait, eventstore.ErrUnavailable, err)
	}
	return mapped
}

// client is the current client. The client closes itself for good when a
// reconnection finds no server; fail then puts a new one here.
func (s *Store) client() (*kurrentdb.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("kurrentdb eventstore: store is closed: %w", eventstore.ErrUnavailable)
	}
	return s.cur, nil
}

// fail maps err and, when the client c has closed itself, replaces it so
// that the next call starts a new discovery instead of failing forever.
func (s *Store) fail(ctx context.Context, c *kurrentdb.Client, op string, err error) error {
	if isCode(err, kurrentdb.ErrorCodeConnectionClosed) {
		s.mu.Lock()
		if !s.closed && s.cur == c {
			if nc, nerr := kurrentdb.NewClient(s.conf); nerr == nil {
				s.cur = nc
				defer func() { _ = c.Close() }()
			}
		}
		s.mu.Unlock()
	}
	return mapError(ctx, op, err)
}

// Close closes the connection; calls in progress fail with
// eventstore.ErrUnavailable, and so do later ones.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.cur.Close()
}

// Append writes every request atomically: one stream through the classic
// append of every server version, several through the multi-stream append of
// KurrentDB 25.1 and later.
//
// Errors: eventstore.ErrInvalid for an empty request, stream name or type, a
// stream name of the server's ("$…"), a nil or repeated event id, an
// expected version below eventstore.Any, or a stream named twice in one
// multi-stream append (the server allows each once); ErrMultiStreamUnsupported
// for several streams on an older server; eventstore.ErrTooLarge past
// MaxAppendEvents or Options.MaxAppendBytes, or past the server's own limits;
// eventstore.ErrWrongVersion when a stream is not at its expected version;
// eventstore.ErrUnavailable when the server cannot be reached or timed out,
// in which case the append may have landed and retrying it is safe.
//
// Retries: the server recognises an append it has already written by its
// event ids. Whether it answers with success or, after the stream moved
// on, with a conflict, Append looks where the request's events must be and
// returns the earlier result when they are all there; ErrInvalid when only
// some are (the ids were reused for something else). A retry with
// eventstore.Any can be recognised only by the server's own bounded memory
// of recent event ids.
func (s *Store) Append(ctx context.Context, reqs ...eventstore.AppendRequest) (eventstore.AppendResult, error) {
	if err := validate(reqs, s.opts.MaxAppendBytes); err != nil {
		return eventstore.AppendResult{}, err
	}
	c, err := s.client()
	if err != nil {
		return eventstore.AppendResult{}, err
	}

	var (
		versions []int64
		written  eventstore.Position // as the server reported it; see locate
	)
	writes, err := s.check(ctx, reqs)
	switch {
	case err != nil:
	case len(writes) == 1:
		versions, written, err = s.appendOne(ctx, c, writes[0])
	default:
		versions, written, err = s.appendMany(ctx, c, writes)
	}
	if err != nil {
		if errors.Is(err, eventstore.ErrWrongVersion) {
			if res, found, rerr := s.earlierResult(ctx, reqs); rerr != nil || found {
				return res, rerr
			}
		}
		return eventstore.AppendResult{}, err
	}
	res, err := s.locate(ctx, writes, versions, written)
	if err != nil || len(writes) == len(reqs) {
		return res, err
	}
	all := make([]int64, 0, len(reqs))
	for _, r := range reqs {
		if len(r.Events) == 0 {
			all = append(all, r.Expected)
		} else {
			all = append(all, res.Versions[0])
			res.Versions = res.Versions[1:]
		}
	}
	res.Versions = all
	return res, nil
}

// check makes the append's checks (its requests without events) and returns
// the requests that write. The server's multi-stream append takes no request
// without records, so a check is a read just before the write, not part of
// it: a write to the checked stream may land between the two. Evident's one
// check (a login's user) is backed by the session cleanup workflow, which
// revokes a login that lands after its user was deactivated.
func (s *Store) check(ctx context.Context, reqs []eventstore.AppendRequest) ([]eventstore.AppendRequest, error) {
	writes := reqs[:0:0]
	for _, r := range reqs {
		if len(r.Events) > 0 {
			writes = append(writes, r)
			continue
		}
		// At v: v is there and v+1 is not; at NoStream: 0 is not there.
		from := max(r.Expected, 0)
		evs, err := s.readRange(ctx, r.Stream, from, 2)
		if err != nil {
			return nil, err
		}
		want := 1
		if r.Expected == eventstore.NoStream {
			want = 0
		}
		if len(evs) != want || want == 1 && evs[0].Version != r.Expected {
			return nil, fmt.Errorf("kurrentdb eventstore: check of %q: expected version %d, the stream has moved: %w",
				r.Stream, r.Expected, eventstore.ErrWrongVersion)
		}
	}
	return writes, nil
}

func (s *Store) appendOne(ctx context.Context, c *kurrentdb.Client, r eventstore.AppendRequest) ([]int64, eventstore.Position, error) {
	events := make([]kurrentdb.EventData, len(r.Events))
	for i, e := range r.Events {
		events[i] = toEventData(e)
	}
	res, err := c.AppendToStream(ctx, r.Stream, kurrentdb.AppendToStreamOptions{StreamState: streamState(r.Expected)}, events...)
	if err != nil {
		return nil, eventstore.Position{}, s.fail(ctx, c, fmt.Sprintf("append to %q", r.Stream), err)
	}
	pos := fromPosition(kurrentdb.Position{Commit: res.CommitPosition, Prepare: res.PreparePosition})
	return []int64{int64(res.NextExpectedVersion)}, pos, nil
}

func (s *Store) appendMany(ctx context.Context, c *kurrentdb.Client, reqs []eventstore.AppendRequest) ([]int64, eventstore.Position, error) {
	streams := make([]kurrentdb.AppendStreamRequest, len(reqs))
	for i, r := range reqs {
		events := make([]kurrentdb.EventData, len(r.Events))
		for j, e := range r.Events {
			d, err := toMultiEventData(e)
			if err != nil {
				return nil, eventstore.Position{}, fmt.Errorf("kurrentdb eventstore: append to %q: metadata of event %s: %w", r.Stream, e.ID, eventstore.ErrInvalid)
			}
			events[j] = d
		}
		streams[i] = kurrentdb.AppendStreamRequest{
			StreamName:          r.Stream,
			Events:              slices.Values(events), // iterated twice by the client
			ExpectedStreamState: streamState(r.Expected),
		}
	}
	res, err := c.MultiStreamAppend(ctx, slices.Values(streams))
	if isCode(err, kurrentdb.ErrorCodeUnsupportedFeature) {
		return nil, eventstore.Position{}, fmt.Errorf("kurrentdb eventstore: append to %d streams at %s: %w", len(reqs), s.url, ErrMultiStreamUnsupported)
	}
	if err != nil {
		return nil, eventstore.Position{}, s.fail(ctx, c, fmt.Sprintf("append to %d streams", len(reqs)), err)
	}
	versions := make([]int64, len(reqs))
	for i, r := range reqs {
		j := slices.IndexFunc(res.Responses, func(a kurrentdb.AppendResponse) bool { return a.Stream == r.Stream })
		if j < 0 {
			return nil, eventstore.Position{}, fmt.Errorf("kurrentdb eventstore: append to %d streams: the server reported no revision for %q", len(reqs), r.Stream)
		}
		versions[i] = res.Responses[j].StreamRevision
	}
	var pos eventstore.Position
	if res.Position >= 0 {
		pos = eventstore.At(uint64(res.Position))
	}
	return versions, pos, nil
}

// locate reads back the last event of each request at the revision the
// server reported, checks that it is the request's own, and takes its
// position. The server's answer is not enough for the port's contract: it
// reports one position for the whole write, which servers have taken from
// the commit record rather than from the last event (and leave out entirely
// for a recognised retry), while ReadAll and ReadStream hand out each
// event's own. The read-back goes to the leader, as the write did.
func (s *Store) locate(ctx context.Context, reqs []eventstore.AppendRequest, versions []int64, written eventstore.Position) (eventstore.AppendResult, error) {
	res := eventstore.AppendResult{Versions: versions}
	for i, r := range reqs {
		last := r.Events[len(r.Events)-1].ID
		at := []int64{versions[i]}
		if r.Expected != eventstore.Any && r.Expected+int64(len(r.Events)) != versions[i] {
			// A recognised retry may report the stream's current revision
			// instead of the earlier write's; the events are where the
			// expected version put them.
			at = append(at, r.Expected+int64(len(r.Events)))
		}
		found := false
		for _, v := range at {
			evs, err := s.readRange(ctx, r.Stream, v, 1)
			if err != nil {
				return eventstore.AppendResult{}, err
			}
			if len(evs) == 1 && evs[0].ID == last {
				res.Versions[i] = v
				if res.Position.Less(evs[0].Position) {
					res.Position = evs[0].Position
				}
				found = true
				break
			}
		}
		if !found {
			return eventstore.AppendResult{}, fmt.Errorf("kurrentdb eventstore: append to %q succeeded at revision %d, but its last event %s is not there", r.Stream, versions[i], last)
		}
	}
	if res.Position.IsZero() {
		// A server that leaves positions out of stream reads.
		res.Position = written
	}
	return res, nil
}

// earlierResult tells whether a conflicting append is a retry of one that
// was written: every request's events are where its expected version put
// them. found is false when the first event is not there; a retry whose
// first request expected eventstore.Any cannot be located and is not found.
// Some events there and others not is ErrInvalid: their ids were reused.
func (s *Store) earlierResult(ctx context.Context, reqs []eventstore.AppendRequest) (res eventstore.AppendResult, found bool, err error) {
	first := eventstore.FirstEvent(reqs)
	res.Versions = make([]int64, len(reqs))
	for i, r := range reqs {
		if len(r.Events) == 0 {
			res.Versions[i] = r.Expected // a check's stream was where it expected
			continue
		}
		if r.Expected == eventstore.Any {
			return eventstore.AppendResult{}, false, nil
		}
		evs, err := s.readRange(ctx, r.Stream, r.Expected+1, len(r.Events))
		if err != nil {
			return eventstore.AppendResult{}, false, err
		}
		for j, e := range r.Events {
			if j < len(evs) && evs[j].ID == e.ID {
				continue
			}
			if e.ID == first {
				return eventstore.AppendResult{}, false, nil
			}
			return eventstore.AppendResult{}, false, fmt.Errorf("kurrentdb eventstore: event %s is in the log but this append is not a retry of the one that wrote it (event %s differs): %w",
				first, e.ID, eventstore.ErrInvalid)
		}
		lastEv := evs[len(r.Events)-1]
		res.Versions[i] = lastEv.Version
		if res.Position.Less(lastEv.Position) {
			res.Position = lastEv.Position
		}
	}
	return res, true, nil
}

func validate(reqs []eventstore.AppendRequest, maxBytes int) error {
	if len(reqs) == 0 {
		return fmt.Errorf("kurrentdb eventstore: append without requests: %w", eventstore.ErrInvalid)
	}
	var events, size int
	ids := make(map[uuid.UUID]struct{})
	streams := make(map[string]struct{}, len(reqs))
	for i, r := range reqs {
		switch {
		case r.Stream == "":
			return fmt.Errorf("kurrentdb eventstore: request %d: empty stream name: %w", i, eventstore.ErrInvalid)
		case r.Stream[0] == '$':
			return fmt.Errorf("kurrentdb eventstore: append to %q: a system stream's name: %w", r.Stream, eventstore.ErrInvalid)
		case len(r.Events) == 0 && r.Expected < eventstore.NoStream:
			return fmt.Errorf("kurrentdb eventstore: append to %q: no events, and no version to check: %w", r.Stream, eventstore.ErrInvalid)
		case r.Expected < eventstore.Any:
			return fmt.Errorf("kurrentdb eventstore: append to %q: bad expected version %d: %w", r.Stream, r.Expected, eventstore.ErrInvalid)
		}
		if _, dup := streams[r.Stream]; dup {
			return fmt.Errorf("kurrentdb eventstore: append to %q: the stream is named twice; the multi-stream append takes each stream once: %w", r.Stream, eventstore.ErrInvalid)
		}
		streams[r.Stream] = struct{}{}
		for j, e := range r.Events {
			switch {
			case e.ID == uuid.Nil:
				return fmt.Errorf("kurrentdb eventstore: append to %q: event %d has no id: %w", r.Stream, j, eventstore.ErrInvalid)
			case e.Type == "":
				return fmt.Errorf("kurrentdb eventstore: append to %q: event %s has no type: %w", r.Stream, e.ID, eventstore.ErrInvalid)
			}
			if _, dup := ids[e.ID]; dup {
				return fmt.Errorf("kurrentdb eventstore: append to %q: event id %s appears twice: %w", r.Stream, e.ID, eventstore.ErrInvalid)
			}
			ids[e.ID] = struct{}{}
			// As the server counts: data, metadata, and the type in UTF-16.
			size += len(e.Data) + len(e.Metadata) + 2*len(e.Type)
		}
		events += len(r.Events)
	}
	if events == 0 {
		return fmt.Errorf("kurrentdb eventstore: append of checks only, no events: %w", eventstore.ErrInvalid)
	}
	if events > MaxAppendEvents {
		return fmt.Errorf("kurrentdb eventstore: %d events in one append, limit %d: %w", events, MaxAppendEvents, eventstore.ErrTooLarge)
	}
	if size > maxBytes {
		return fmt.Errorf("kurrentdb eventstore: %d bytes in one append, limit %d: %w", size, maxBytes, eventstore.ErrTooLarge)
	}
	return nil
}

// ReadStream returns the stream's events with version >= from, oldest
// first; a negative from reads from the start. A stream that does not exist
// (or was soft-deleted) has no events. An empty name is eventstore.ErrInvalid;
// every read error is returned, wrapping eventstore.ErrUnavailable when the
// server cannot be reached.
func (s *Store) ReadStream(ctx context.Context, stream string, from int64) ([]eventstore.RecordedEvent, error) {
	if stream == "" {
		return nil, fmt.Errorf("kurrentdb eventstore: read stream: empty stream name: %w", eventstore.ErrInvalid)
	}
	return s.readRange(ctx, stream, max(from, 0), math.MaxInt64)
}

// readRange reads up to count events of stream from revision from on.
func (s *Store) readRange(ctx context.Context, stream string, from int64, count int) ([]eventstore.RecordedEvent, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	op := fmt.Sprintf("read stream %q from %d", stream, from)
	rs, err := c.ReadStream(ctx, stream, kurrentdb.ReadStreamOptions{
		Direction: kurrentdb.Forwards,
		From:      kurrentdb.Revision(uint64(from)),
	}, uint64(count))
	if err != nil {
		if isCode(err, kurrentdb.ErrorCodeResourceNotFound) {
			return nil, nil
		}
		return nil, s.fail(ctx, c, op, err)
	}
	defer rs.Close()
	var out []eventstore.RecordedEvent
	for len(out) < count {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(out) == 0 && isCode(err, kurrentdb.ErrorCodeResourceNotFound) {
				return nil, nil
			}
			return nil, s.fail(ctx, c, op, err)
		}
		if ev.Event == nil {
			continue
		}
		out = append(out, fromRecorded(ev.Event))
	}
	return out, nil
}

// ReadAll returns up to limit selected events (see Options.StreamPrefixes)
// with a position strictly after after, in log order, reading $all through
// a filtered catch-up subscription. It may return fewer than limit while
// more exist (callers read on from the last one): it ends when the server
// says it has caught up, or after Options.CatchUpIdle without a message. A
// limit below one is eventstore.ErrInvalid; every read error is returned,
// a dropped subscription never taken for the end of the log.
func (s *Store) ReadAll(ctx context.Context, after eventstore.Position, limit int) ([]eventstore.RecordedEvent, error) {
	if limit < 1 {
		return nil, fmt.Errorf("kurrentdb eventstore: read all: limit %d: %w", limit, eventstore.ErrInvalid)
	}
	evs, err := catchUp(ctx, s.src, s.filter, after, limit, s.opts.CatchUpIdle)
	if err != nil {
		return nil, s.wrapCtx(ctx, fmt.Sprintf("read all after %s", after), err)
	}
	return evs, nil
}

// Wait returns nil as soon as a selected event after after exists; callers
// re-read. It returns ctx's error when ctx ends first, and the
// subscription's error (eventstore.ErrUnavailable when the server went away)
// if it drops: Wait does not resubscribe, so an outage reaches the caller.
func (s *Store) Wait(ctx context.Context, after eventstore.Position) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := waitFor(ctx, s.src, s.filter, after); err != nil {
		return s.wrapCtx(ctx, fmt.Sprintf("wait after %s", after), err)
	}
	return nil
}

// Subscribe hands every selected event after after to handle, once and in
// log order, until ctx ends or handle fails. When the subscription drops or
// cannot be opened because the server is unavailable, it resubscribes from
// the last event handled, with backoff (100 ms doubling to 10 s, jittered),
// and drops any event the server sends again, so that no event is lost or
// handled twice within one call. Across calls, after is the caller's
// checkpoint.
//
// It returns handle's error as it was, ctx's error when ctx ends, and any
// failure that waiting cannot cure (bad credentials, a bad position).
func (s *Store) Subscribe(ctx context.Context, after eventstore.Position, handle func(context.Context, eventstore.RecordedEvent) error) error {
	return follow(ctx, s.src, s.filter, after, s.bo, handle)
}

// wrapCtx adds context to errors that catch-up returned bare (ctx's own).
func (s *Store) wrapCtx(ctx context.Context, op string, err error) error {
	if errors.Is(err, ctx.Err()) && ctx.Err() != nil {
		return fmt.Errorf("kurrentdb eventstore: %s: %w", op, err)
	}
	return err
}
