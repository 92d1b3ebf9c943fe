package jobs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
)

// Bounds of a listing.
const (
	// DefaultListLimit is the page size of ListJobs when none is given.
	DefaultListLimit = 50
	// MaxListLimit is the largest page ListJobs returns.
	MaxListLimit = 1000
)

// ListOptions selects and pages the jobs ListJobs returns. The zero value
// lists the newest DefaultListLimit records of every algorithm and status.
type ListOptions struct {
	// Algorithm keeps only this algorithm's jobs.
	Algorithm string
	// Status keeps only records with this status (one of Statuses).
	Status Status
	// Since keeps only jobs submitted at or after it.
	Since time.Time
	// Limit is the page size, 1 to MaxListLimit; 0: DefaultListLimit.
	Limit int
	// Cursor continues a listing where the page that returned it ended
	// (JobPage.Next). It is opaque; one from another bucket, or made up,
	// is refused.
	Cursor string
}

// OptionError is one bad option of a listing: which one (by the name the
// HTTP API and the CLI give it) and what is wrong with it.
type OptionError struct {
	Option  string
	Message string
}

func (e *OptionError) Error() string { return e.Option + ": " + e.Message }

// ErrBadOption is wrapped by the errors of ListJobs when an option is
// invalid; errors.As finds each *OptionError.
var ErrBadOption = errors.New("invalid listing option")

// Validate checks o and returns one *OptionError per bad option, joined
// and wrapping ErrBadOption.
func (o ListOptions) Validate() error {
	var errs []error
	bad := func(opt, format string, args ...any) {
		errs = append(errs, &OptionError{Option: opt, Message: fmt.Sprintf(format, args...)})
	}
	if o.Algorithm != "" && !discovery.ValidAlgorithmName(o.Algorithm) {
		bad("algorithm", "%q is not an algorithm name (lower case letters, digits and '_', starting with a letter, at most 64 characters)", truncate(o.Algorithm, 100))
	}
	if o.Status != "" && !slices.Contains(Statuses, o.Status) {
		bad("status", "%q is not a status; want one of %s", truncate(string(o.Status), 100), statusList())
	}
	if o.Limit < 0 || o.Limit > MaxListLimit {
		bad("limit", limitRange, o.Limit, MaxListLimit)
	}
	if o.Cursor != "" {
		if _, err := decodeCursor(o.Cursor); err != nil {
			bad("cursor", "%v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrBadOption, errors.Join(errs...))
}

// OptionErrors returns the *OptionError values err holds (one joined by
// Validate, or by a caller's own checks), in order.
func OptionErrors(err error) []*OptionError {
	var out []*OptionError
	var walk func(error)
	walk = func(e error) {
		if u, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range u.Unwrap() {
				walk(x)
			}
			return
		}
		var oe *OptionError
		if errors.As(e, &oe) {
			out = append(out, oe)
		}
	}
	walk(err)
	return out
}

const limitRange = "%d is out of range: want 1 to %d"

// ZeroLimitError is the error of a limit given as 0 by someone (a query
// parameter, a flag), where ListOptions.Limit 0 means the default.
func ZeroLimitError() error {
	return &OptionError{Option: "limit", Message: fmt.Sprintf(limitRange, 0, MaxListLimit)}
}

func statusList() string {
	names := make([]string, len(Statuses))
	for i, s := range Statuses {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// ParseSince reads a since option: an RFC 3339 time, or a Go duration
// (such as 90m or 24h) meaning that long before now.
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, &OptionError{Option: "since", Message: fmt.Sprintf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration before now (90m, 24h)", truncate(v, 100))}
}

// JobPage is one page of a listing.
type JobPage struct {
	// Jobs are the records, most recently written first, without their
	// output and input (Result reads a record whole).
	Jobs []Result `json:"jobs"`
	// Next continues the listing after the last of Jobs; empty when the
	// listing is complete.
	Next string `json:"next,omitempty"`
	// Scanned counts the records read to fill the page.
	Scanned int `json:"scanned"`
}

// cursorPrefix marks the cursors of this version: a cursor is the
// results bucket's stream sequence the next page starts below.
const cursorPrefix = "r1:"

func encodeCursor(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatUint(seq, 10)))
}

func decodeCursor(c string) (uint64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	rest, ok := strings.CutPrefix(string(b), cursorPrefix)
	if err != nil || !ok {
		return 0, errors.New("not a cursor this listing returned (pass the value of next unchanged)")
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	if err != nil || seq == 0 {
		return 0, errors.New("not a cursor this listing returned (pass the value of next unchanged)")
	}
	return seq, nil
}

// Window sizes of the backward scan: the first window is a few pages'
// worth of sequences, later ones grow up to listMaxWindow, so a filter
// that matches rarely costs few round trips.
const (
	listMinWindow = 256
	listMaxWindow = 8192
	// listBatchBytes bounds the bytes of one batch reply; a window
	// holding more is read in several requests.
	listBatchBytes = 4 << 20
)

// ListJobs lists result records, most recently written first (a job that
// was retried and then finished appears where its last record was
// written), filtered by opts, one page at a time.
//
// The records are read backwards through the results bucket's stream in
// windows of sequences, each one batched direct get (no consumer, so any
// role that may read results by direct get may list them); a page reads
// about Limit records without filters, and with filters as many as it
// takes to find Limit matches, stopping at the first record older than
// Since. The cursor is the sequence the next page starts below: paging is
// stable — no job appears twice across pages — and a job whose record is
// rewritten while a listing pages on moves to its front, out of the later
// pages.
func (s *Store) ListJobs(ctx context.Context, opts ListOptions) (JobPage, error) {
	if err := opts.Validate(); err != nil {
		return JobPage{}, fmt.Errorf("jobs: list: %w", err)
	}
	limit := opts.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	st, err := s.results.Status(ctx)
	if err != nil {
		return JobPage{}, fmt.Errorf("jobs: list: %w", err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	first, hi := info.State.FirstSeq, info.State.LastSeq
	if opts.Cursor != "" {
		c, _ := decodeCursor(opts.Cursor)
		hi = min(hi, c-1)
	}
	page := JobPage{Jobs: []Result{}}
	window := uint64(max(listMinWindow, 2*limit))
	for hi >= first && hi > 0 && info.State.Msgs > 0 {
		lo := first
		if hi-first+1 > window {
			lo = hi - window + 1
		}
		msgs, err := s.batchGet(ctx, info.Config.Name, lo, hi)
		if err != nil {
			return JobPage{}, fmt.Errorf("jobs: list: %w", err)
		}
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if !opts.Since.IsZero() && m.at.Before(opts.Since) {
				// Written before since, so submitted before it too, as is
				// every record below it.
				return page, nil
			}
			page.Scanned++
			if !opts.mayMatch(m.data) {
				continue
			}
			r, ok := listRecord(m)
			if !ok || !opts.match(r) {
				continue
			}
			page.Jobs = append(page.Jobs, r)
			if len(page.Jobs) == limit {
				if m.seq > first {
					page.Next = encodeCursor(m.seq)
				}
				return page, nil
			}
		}
		if lo == first {
			break
		}
		hi = lo - 1
		window = min(4*window, listMaxWindow)
	}
	return page, nil
}

// mayMatch is a cheap first look at a record's JSON: a record of the
// algorithm (or status) asked for holds its name as a JSON string after
// the key, whatever else it holds (names need no escaping), so a record
// without it is skipped undecoded.
func (o ListOptions) mayMatch(data []byte) bool {
	return (o.Algorithm == "" || bytes.Contains(data, []byte(`"algorithm":"`+o.Algorithm+`"`))) &&
		(o.Status == "" || bytes.Contains(data, []byte(`"status":"`+string(o.Status)+`"`)))
}

func (o ListOptions) match(r Result) bool {
	return (o.Algorithm == "" || r.Algorithm == o.Algorithm) &&
		(o.Status == "" || r.Status == o.Status) &&
		(o.Since.IsZero() || !r.SubmittedAt.Before(o.Since))
}

// listRecord decodes a stored message as a listing shows it; deletes,
// purges and corrupt records are skipped.
func listRecord(m storedMsg) (Result, bool) {
	if len(m.data) == 0 || m.op != "" {
		return Result{}, false
	}
	key, ok := strings.CutPrefix(m.subject, "$KV."+ResultsBucket+".")
	if !ok {
		return Result{}, false
	}
	var lr struct {
		Result
		// Shadow Result.Output and Result.Input: the decoder skips
		// them without keeping them.
		Output skipJSON `json:"output"`
		Input  skipJSON `json:"input"`
	}
	if err := json.Unmarshal(m.data, &lr); err != nil || lr.JobID != key {
		return Result{}, false
	}
	return lr.Result, true
}

// skipJSON takes any JSON value and keeps nothing.
type skipJSON struct{}

func (*skipJSON) UnmarshalJSON([]byte) error { return nil }

// storedMsg is one message of a batched direct get.
type storedMsg struct {
	seq     uint64
	subject string
	at      time.Time
	op      string // KV-Operation: DEL or PURGE; "" for a put
	data    []byte
}

// batchTimeout bounds the wait for each message of a batched direct get.
const batchTimeout = 5 * time.Second

// batchGet reads the messages of stream with sequences lo to hi, in order,
// by batched direct gets: the server streams them into an inbox and ends
// each batch with a 204 status (or 404 when nothing is left).
func (s *Store) batchGet(ctx context.Context, stream string, lo, hi uint64) ([]storedMsg, error) {
	nc := s.js.Conn()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject := s.apiPrefix() + "DIRECT.GET." + stream
	var out []storedMsg
	for seq := lo; seq <= hi; {
		req, _ := json.Marshal(map[string]any{"seq": seq, "batch": hi - seq + 1, "max_bytes": listBatchBytes})
		if err := nc.PublishRequest(subject, inbox, req); err != nil {
			return nil, fmt.Errorf("direct get %s: %w", stream, err)
		}
		next := seq
	batch:
		for {
			mctx, cancel := context.WithTimeout(ctx, batchTimeout)
			m, err := sub.NextMsgWithContext(mctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				// A request the user may not publish is dropped without
				// an answer (the server tells only the async handler).
				return nil, fmt.Errorf("direct get %s from %d: no reply within %s (may this user publish to %s?)", stream, seq, batchTimeout, subject)
			}
			if err != nil {
				return nil, fmt.Errorf("direct get %s from %d: %w", stream, seq, err)
			}
			switch status := m.Header.Get("Status"); status {
			case "":
			case "204": // end of this batch
				break batch
			case "404": // nothing at or after seq
				return out, nil
			default:
				return nil, fmt.Errorf("direct get %s from %d: status %s %s", stream, seq, status, m.Header.Get("Description"))
			}
			n, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
			if n < next {
				continue // from an earlier request's batch
			}
			next = n + 1
			if n > hi {
				continue
			}
			at, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
			out = append(out, storedMsg{seq: n, subject: m.Header.Get(jetstream.SubjectHeader), at: at, op: m.Header.Get("KV-Operation"), data: m.Data})
		}
		if next == seq || next > hi {
			break
		}
		seq = next
	}
	return out, nil
}

// apiPrefix is the JetStream API prefix of s's context, ending in a dot.
func (s *Store) apiPrefix() string {
	o := s.js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}
