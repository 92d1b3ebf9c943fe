package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/discovery"
)

// SubmitOptions are the optional parts of a job. The zero value submits
// a job with a generated id and the algorithm's own timeout.
type SubmitOptions struct {
	// ID names the job; it must satisfy ValidJobID. Default: a new NUID.
	ID string
	// Timeout is the job's time budget; it can only shorten the
	// algorithm's timeout. Zero: the algorithm's timeout.
	Timeout time.Duration
	// Notify is a subject the final result record is published to.
	Notify string
	// Header holds extra headers stored with the job and kept in its dead
	// letter.
	Header nats.Header
	// RequireKnown refuses a job for an algorithm that is not known
	// (CheckKnown: never registered, not declared) with an
	// *UnknownAlgorithmError naming the closest known names, instead of
	// storing a job that would wait for a runner that never comes. The
	// zero value stores the job whatever its algorithm.
	RequireKnown bool
	// Priority places the job among its algorithm's waiting jobs; the
	// zero value is PriorityNormal.
	Priority Priority
	// NotBefore delays the job: it enters JOBS at this time (rounded up to
	// the second), and until then Result reports it as StatusScheduled.
	// Zero, or a time not after now: at once. Needs stream SCHEDULES.
	NotBefore time.Time
}

// ErrTooLarge is wrapped by Submit's error when a job, with the headers
// the pipeline adds on its way, cannot fit the server's max payload.
var ErrTooLarge = errors.New("413 job too large")

// HeaderReserve is the part of the server's max payload that Submit keeps
// free for the headers the pipeline adds to a job on its way: the job id
// and time budget sent to the runner, and the Pnp-Dead-* headers of its
// dead letter. A job's body plus its own headers may use the rest.
const HeaderReserve = 8 << 10

// MaxJobSize returns how many bytes a job's body and headers may take on
// a server whose max payload is maxPayload: maxPayload - HeaderReserve.
func MaxJobSize(maxPayload int64) int64 { return max(0, maxPayload-HeaderReserve) }

// checkSize refuses a job that the pipeline could not carry whole.
func (s *Store) checkSize(msg *nats.Msg, id string) error {
	mp := s.js.Conn().MaxPayload()
	if mp <= 0 {
		return nil // not connected yet: the server checks what it can
	}
	size := len(msg.Data) + HeaderSize(msg.Header) + len(HeaderMsgID) + len(id) + 4
	if limit := MaxJobSize(mp); int64(size) > limit {
		return fmt.Errorf("%w: %d bytes with its headers, over the limit of %d bytes (the server's max payload of %d minus %d reserved for the pipeline's headers)",
			ErrTooLarge, size, limit, mp, HeaderReserve)
	}
	return nil
}

// Submission says where a job was stored.
type Submission struct {
	// ID is the job id, the key of its result.
	ID string
	// Seq is the job's sequence in stream JOBS.
	Seq uint64
	// Duplicate is true when a job with this id was already stored inside
	// the duplicate window: this submission changed nothing.
	Duplicate bool
	// NotBefore is when a delayed job enters JOBS; zero for a job stored
	// at once. Seq is then its schedule's sequence in SCHEDULES.
	NotBefore time.Time
}

// Submit stores a job for algorithm with input as its body. input must be
// JSON; whether it fits the algorithm's schema is checked by the
// controller, which records a failed result when it does not.
func (s *Store) Submit(ctx context.Context, algorithm string, input []byte, opts SubmitOptions) (Submission, error) {
	var errs []error
	if !discovery.ValidAlgorithmName(algorithm) {
		errs = append(errs, fmt.Errorf("invalid algorithm name %q", algorithm))
	}
	if !json.Valid(input) {
		errs = append(errs, errors.New("input is not valid JSON"))
	}
	if opts.ID == "" {
		opts.ID = nuid.Next()
	} else if !ValidJobID(opts.ID) {
		errs = append(errs, fmt.Errorf("invalid job id %q: want letters, digits, '_', '=', '-' and single inner dots, at most %d characters", opts.ID, maxJobIDLen))
	} else if ReservedJobID(opts.ID) {
		errs = append(errs, fmt.Errorf("invalid job id %q: the prefix %q is reserved for ids the controller assigns", opts.ID, autoPrefix))
	}
	if opts.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s is negative", opts.Timeout))
	}
	prio, err := ParsePriority(string(opts.Priority))
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Submission{}, fmt.Errorf("jobs: submit: %w", err)
	}
	if opts.RequireKnown {
		if err := s.CheckKnown(ctx, algorithm); err != nil {
			return Submission{}, fmt.Errorf("jobs: submit: %w", err)
		}
	}
	msg := &nats.Msg{Subject: JobSubject(algorithm, prio), Data: input, Header: nats.Header{}}
	for k, v := range opts.Header {
		msg.Header[k] = v
	}
	if prio != PriorityNormal {
		msg.Header.Set(HeaderPriority, string(prio))
	} else {
		msg.Header.Del(HeaderPriority)
	}
	if opts.Timeout > 0 {
		msg.Header.Set(HeaderTimeout, opts.Timeout.String())
	}
	if opts.Notify != "" {
		msg.Header.Set(HeaderNotify, opts.Notify)
	}
	if n := msg.Header.Get(HeaderNotify); n != "" && !ValidNotifySubject(n) {
		return Submission{}, fmt.Errorf("jobs: submit: notify subject %q: want %s<token>[.<token>...] without wildcards", n, NotifySubjectPrefix)
	}
	if err := s.checkSize(msg, opts.ID); err != nil {
		return Submission{}, fmt.Errorf("jobs: submit %s: %w", opts.ID, err)
	}
	if opts.NotBefore.After(time.Now()) {
		return s.submitAt(ctx, msg, algorithm, prio, opts.ID, opts.NotBefore)
	}
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(opts.ID))
	if err != nil {
		return Submission{}, fmt.Errorf("jobs: submit %s: %w", opts.ID, s.fullError(ctx, err, msg.Subject))
	}
	return Submission{ID: opts.ID, Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// RegisteredRunners counts the keys the discovery bucket holds for
// algorithm: its live registrations and, for up to the bucket's max age,
// the markers of instances that left. Zero means no runner serves it. It
// needs only stream info on the bucket, which producers may read.
func (s *Store) RegisteredRunners(ctx context.Context, algorithm string) (int, error) {
	if !discovery.ValidAlgorithmName(algorithm) {
		return 0, fmt.Errorf("jobs: invalid algorithm name %q", algorithm)
	}
	bucket := s.registry.KeyValue().Bucket()
	str, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return 0, fmt.Errorf("jobs: discovery bucket %s: %w", bucket, err)
	}
	info, err := str.Info(ctx, jetstream.WithSubjectFilter("$KV."+bucket+"."+algorithm+".*"))
	if err != nil {
		return 0, fmt.Errorf("jobs: discovery bucket %s: %w", bucket, err)
	}
	return len(info.State.Subjects), nil
}

// ErrJobsFull is wrapped by the error of Submit and Replay when stream
// JOBS (or the account's JetStream storage) holds as much as it may: the
// job was not stored. JOBS refuses new jobs rather than dropping old ones;
// it accepts them again as controllers take jobs.
var ErrJobsFull = errors.New("job queue full")

// ErrAlgorithmFull is wrapped, together with ErrJobsFull, by the error of
// Submit and Replay when the job's algorithm has as many jobs waiting in
// JOBS as StoreConfig.JobsMaxPerAlgorithm allows: only that algorithm's
// new jobs are refused.
var ErrAlgorithmFull = errors.New("per-algorithm queue full")

// JetStream error codes of a refused write (nats-server's
// JSStreamStoreFailedF, JSAccountResourcesExceededErr,
// JSInsufficientResourcesErr, JSStorageResourcesExceededErr).
const (
	jsErrStoreFailed              jetstream.ErrorCode = 10077
	jsErrAccountResourcesExceeded jetstream.ErrorCode = 10002
	jsErrInsufficientResources    jetstream.ErrorCode = 10023
	jsErrStorageResourcesExceeded jetstream.ErrorCode = 10047
)

// fullError turns the server's refusal of a job on subject for lack of
// room into an error wrapping ErrJobsFull (and ErrAlgorithmFull when the
// algorithm's own limit refused it) that names the limit; other errors
// pass unchanged.
func (s *Store) fullError(ctx context.Context, err error, subject string) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case jsErrStoreFailed:
		// "maximum bytes exceeded", "maximum messages exceeded",
		// "maximum messages per subject exceeded".
		if !strings.HasPrefix(apiErr.Description, "maximum ") {
			return err
		}
	case jsErrAccountResourcesExceeded, jsErrInsufficientResources, jsErrStorageResourcesExceeded:
	default:
		return err
	}
	const again = "nothing was stored; jobs are accepted again as controllers take them ('pnp jobs' shows what waits)"
	if strings.Contains(apiErr.Description, "per subject") {
		limit := "its limit of jobs"
		if n := s.jobsConfig(ctx).MaxMsgsPerSubject; n > 0 {
			limit = jobCount(n)
		}
		return fmt.Errorf("%w: %s: %w (%s waiting in stream %s: %s); other algorithms' jobs are still accepted; %s; 'pnp provision --jobs-max-per-algorithm' raises the limit",
			ErrJobsFull, subject, ErrAlgorithmFull, limit, JobsStream, apiErr.Description, again)
	}
	limits := ""
	if s.jobs != nil {
		cfg := s.jobsConfig(ctx)
		jobs := "any number of jobs"
		if cfg.MaxMsgs > 0 {
			jobs = jobCount(cfg.MaxMsgs)
		}
		limits = fmt.Sprintf(" at its limits of %s and %s,", byteCount(cfg.MaxBytes), jobs)
	}
	return fmt.Errorf("%w: stream %s refused the job (%s),%s %s; 'pnp provision --jobs-max-bytes/--jobs-max-msgs' raise the limits", ErrJobsFull, JobsStream, apiErr.Description, limits, again)
}

// jobCount spells n jobs.
func jobCount(n int64) string {
	if n == 1 {
		return "1 job"
	}
	return fmt.Sprintf("%d jobs", n)
}

// byteCount spells n bytes for a person: 1 GiB, 64 MiB, 512 KiB, 1000 B;
// "no limit" for -1.
func byteCount(n int64) string {
	switch {
	case n < 0:
		return "no limit"
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// DeadLetter is one message of stream DEAD.
type DeadLetter struct {
	// Seq is the dead letter's sequence in DEAD.
	Seq       uint64
	Algorithm string
	JobID     string
	Code      int
	Reason    string
	Attempts  int
	DeadAt    time.Time
	// Header and Data are the message as stored: the job's body and
	// headers plus the Pnp-Dead-* headers.
	Header nats.Header
	Data   []byte
}

// DeadLetters lists the dead letters, oldest first; algorithm, when not
// empty, keeps only that algorithm's.
func (s *Store) DeadLetters(ctx context.Context, algorithm string) ([]DeadLetter, error) {
	filter := DeadSubjectPrefix + "*"
	if algorithm != "" {
		filter = DeadSubjectPrefix + algorithm
	}
	info, err := s.dead.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("jobs: dead letters: %w", err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil, nil
	}
	// One consumer per listing, deleted when it ends; should the delete
	// fail, the server drops it after 30 s idle (the library's default
	// keeps one 5 minutes, and a dashboard lists on every job event).
	cons, err := s.js.OrderedConsumer(ctx, DeadStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, InactiveThreshold: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("jobs: dead letters: %w", err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.dead.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	var out []DeadLetter
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("jobs: dead letters: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("jobs: dead letters: %w", err)
			}
			out = append(out, deadLetter(md.Sequence.Stream, m.Subject(), m.Headers(), m.Data()))
			if md.NumPending == 0 {
				// The last one: do not wait for the rest of the batch.
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("jobs: dead letters: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

func deadLetter(seq uint64, subject string, h nats.Header, data []byte) DeadLetter {
	d := DeadLetter{
		Seq:       seq,
		Algorithm: strings.TrimPrefix(subject, DeadSubjectPrefix),
		JobID:     h.Get(HeaderJobID),
		Reason:    h.Get(HeaderDeadReason),
		Header:    h,
		Data:      data,
	}
	d.Code, _ = strconv.Atoi(h.Get(HeaderDeadCode))
	d.Attempts, _ = strconv.Atoi(h.Get(HeaderDeadAttempts))
	d.DeadAt, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderDeadAt))
	return d
}

// ErrAlreadySucceeded is returned by Replay when the job has a succeeded
// result after all (it was also run elsewhere); the dead letter is removed.
var ErrAlreadySucceeded = errors.New("job already succeeded")

// ErrNotReplayable is returned by Replay for a dead letter without the
// job's body (HeaderDeadBodyOmitted: the job was too large to keep).
var ErrNotReplayable = errors.New("dead letter cannot be replayed")

// Replay publishes a dead letter as a job again, under the same job id, and
// removes it from DEAD. The job's failed result is deleted first, so the
// new attempt can store its own; attempts start again from zero.
//
// Replay is idempotent, also when several run at once for one dead letter:
// they make one new job and one result. The new job's message id is
// derived from the dead letter's sequence, so JOBS stores it once; the
// failed record is deleted compare-and-set, and only when it is the
// outcome this dead letter belongs to (its dead_letter_seq), never a
// newer one. A replay that finds the dead letter already replayed returns
// a Submission with Duplicate set.
func (s *Store) Replay(ctx context.Context, d DeadLetter) (Submission, error) {
	if !ValidJobID(d.JobID) || !discovery.ValidAlgorithmName(d.Algorithm) {
		return Submission{}, fmt.Errorf("jobs: replay dead letter %d: no valid job id and algorithm", d.Seq)
	}
	if n := d.Header.Get(HeaderDeadBodyOmitted); n != "" {
		return Submission{}, fmt.Errorf("jobs: replay %s: %w: the job's body (%s bytes) did not fit its dead letter %d", d.JobID, ErrNotReplayable, n, d.Seq)
	}
	e, err := s.results.Get(ctx, d.JobID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// No record: never stored, expired, or deleted by a replay of
		// this dead letter running at the same time; publishing again is
		// a duplicate JOBS drops.
	case err != nil:
		return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, err)
	default:
		r, derr := decodeResult(d.JobID, e.Value())
		switch {
		case derr == nil && r.Status == StatusSucceeded:
			if err := s.deleteDead(ctx, d.Seq); err != nil {
				return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, err)
			}
			return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, ErrAlreadySucceeded)
		case derr == nil && r.DeadLetterSeq != d.Seq:
			// A newer record: this dead letter was replayed already and
			// the new job has begun or ended. Its outcome stays.
			if err := s.deleteDead(ctx, d.Seq); err != nil {
				return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, err)
			}
			return Submission{ID: d.JobID, Duplicate: true}, nil
		}
		err := s.results.Delete(ctx, d.JobID, jetstream.LastRevision(e.Revision()))
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSequence(err) {
			// Another replay deleted it first and publishes the job.
			return Submission{ID: d.JobID, Duplicate: true}, nil
		}
		if err != nil {
			return Submission{}, fmt.Errorf("jobs: replay %s: delete result: %w", d.JobID, err)
		}
	}
	// The job goes back where it waited: its priority is in its headers.
	prio, err := ParsePriority(d.Header.Get(HeaderPriority))
	if err != nil {
		prio = PriorityNormal
	}
	msg := &nats.Msg{Subject: JobSubject(d.Algorithm, prio), Data: d.Data, Header: nats.Header{}}
	for k, v := range d.Header {
		if ReservedHeader(k) || strings.EqualFold(k, HeaderDeadHeadersOmitted) {
			continue
		}
		msg.Header[k] = v
	}
	msg.Header.Set(HeaderJobID, d.JobID)
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("%s@replay-%d", d.JobID, d.Seq)))
	if err != nil {
		return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, s.fullError(ctx, err, msg.Subject))
	}
	if err := s.deleteDead(ctx, d.Seq); err != nil {
		return Submission{}, fmt.Errorf("jobs: replay %s: %w", d.JobID, err)
	}
	return Submission{ID: d.JobID, Seq: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// ErrNoDeadLetter is wrapped by ReplayDead's error for a job id without a
// dead letter.
var ErrNoDeadLetter = errors.New("no dead letter")

// Replayed is what ReplayDead did with one dead letter: Submission is
// Replay's, or Err its error (ErrAlreadySucceeded when the dead letter was
// removed because the job succeeded after all).
type Replayed struct {
	Letter     DeadLetter
	Submission Submission
	Err        error
}

// ReplayDead replays, with Replay, every dead letter of algorithm (every
// algorithm when "") whose job id is in ids, or every one when ids is
// empty, oldest first, and returns what each replay did; a failed replay
// does not stop the others. The error is the listing's, or joins one
// error wrapping ErrNoDeadLetter per id with no dead letter.
func (s *Store) ReplayDead(ctx context.Context, algorithm string, ids []string) ([]Replayed, error) {
	letters, err := s.DeadLetters(ctx, algorithm)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	found := map[string]bool{}
	var out []Replayed
	for _, d := range letters {
		if len(want) > 0 && !want[d.JobID] {
			continue
		}
		found[d.JobID] = true
		sub, err := s.Replay(ctx, d)
		out = append(out, Replayed{Letter: d, Submission: sub, Err: err})
	}
	var errs []error
	for _, id := range ids {
		if !found[id] {
			errs = append(errs, fmt.Errorf("%w for job %s", ErrNoDeadLetter, id))
		}
	}
	return out, errors.Join(errs...)
}

// deleteDead removes dead letter seq; one already removed is no error.
func (s *Store) deleteDead(ctx context.Context, seq uint64) error {
	err := s.dead.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	// The server answers a deletion of a missing message with a generic
	// error: look before calling it a failure.
	if _, gerr := s.dead.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("delete dead letter %d: %w", seq, err)
}

// isWrongLastSequence reports a compare-and-set deletion that lost.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Queue summarises one algorithm's jobs.
type Queue struct {
	Algorithm string `json:"algorithm"`
	// Waiting jobs are stored and not handed to a controller yet.
	Waiting uint64 `json:"waiting"`
	// InFlight jobs are held by a controller: running, or waiting to be
	// retried.
	InFlight uint64 `json:"in_flight"`
	// Dead counts the algorithm's dead letters.
	Dead uint64 `json:"dead"`
	// Runners counts live runner instances.
	Runners int `json:"runners"`
}

// Queues reports, per algorithm with jobs, dead letters or runners, how
// many jobs wait, run and failed. Jobs of an algorithm no runner ever
// served simply wait.
func (s *Store) Queues(ctx context.Context) ([]Queue, error) {
	byAlg := map[string]*Queue{}
	get := func(alg string) *Queue {
		q, ok := byAlg[alg]
		if !ok {
			q = &Queue{Algorithm: alg}
			byAlg[alg] = q
		}
		return q
	}
	info, err := s.jobs.Info(ctx, jetstream.WithSubjectFilter(JobsSubjectPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("jobs: queues: %w", err)
	}
	for subj, n := range info.State.Subjects {
		alg, _ := SubjectAlgorithm(subj)
		get(alg).Waiting += n
	}
	dinfo, err := s.dead.Info(ctx, jetstream.WithSubjectFilter(DeadSubjectPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("jobs: queues: %w", err)
	}
	for subj, n := range dinfo.State.Subjects {
		get(strings.TrimPrefix(subj, DeadSubjectPrefix)).Dead = n
	}
	recs, err := s.registry.List(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("jobs: queues: %w", err)
	}
	for _, r := range recs {
		get(r.Algorithm).Runners++
	}
	for alg, q := range byAlg {
		if q.Waiting == 0 || !discovery.ValidAlgorithmName(alg) {
			continue
		}
		for _, p := range Priorities {
			ci, err := s.js.Consumer(ctx, JobsStream, PriorityConsumerName(alg, p))
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("jobs: queues: consumer for %s: %w", alg, err)
			}
			inf := ci.CachedInfo()
			n := min(uint64(inf.NumAckPending), q.Waiting)
			q.InFlight += n
			q.Waiting -= n
		}
	}
	out := make([]Queue, 0, len(byAlg))
	for _, q := range byAlg {
		out = append(out, *q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Algorithm < out[j].Algorithm })
	return out, nil
}
