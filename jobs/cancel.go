package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
)

// ErrUnknownJob is wrapped by Cancel's error for a job id with no result
// record and no job in JOBS: never submitted, or finished so long ago
// that its record expired.
var ErrUnknownJob = errors.New("unknown job")

// ErrFinished is wrapped by Cancel's error, a *FinishedError, when the
// job already has its outcome.
var ErrFinished = errors.New("job already finished")

// FinishedError is Cancel's error for a job that already has a final
// record: Result is that record (succeeded, failed or cancelled).
type FinishedError struct {
	Result Result
}

func (e *FinishedError) Error() string {
	return fmt.Sprintf("jobs: cancel %s: %s: it %s", e.Result.JobID, ErrFinished, e.Result.Status)
}

// Unwrap makes errors.Is(err, ErrFinished) true.
func (e *FinishedError) Unwrap() error { return ErrFinished }

// CancelMarkSuffix ends the keys of ServedBucket that Cancel writes,
// CancelMarkKey.
const CancelMarkSuffix = ".cancelled"

// CancelMarkKey is the key of ServedBucket whose latest write is the time
// of algorithm's latest cancel, "<algorithm>.cancelled" (no algorithm
// name holds a dot, so it names no algorithm). Cancel writes it before the
// cancelled record: controllers watch these marks and read the record
// before a job's first dispatch only when the job was stored before its
// algorithm's latest cancel.
func CancelMarkKey(algorithm string) string { return algorithm + CancelMarkSuffix }

// cancelTries bounds the compare-and-set rounds of Cancel against a
// controller writing the job's record at the same time.
const cancelTries = 10

// Cancel stops job id for good and returns its cancelled record.
//
// The record with status cancelled is the cancellation: it is written
// compare-and-set, created where the job has no record yet or replacing
// its retrying record, so that of a cancel and the job's own outcome
// racing, exactly one final record is stored. Before the record,
// Cancel writes the algorithm's cancel mark (CancelMarkKey); a controller
// that saw it reads the record of a job stored before it and retires a
// cancelled job without running it; its own outcome can never replace
// the record.
// Once the record is stored, Cancel tells the algorithm's instances
// (protocol.CancelSubject): the one running the job cancels the
// request's context, and one that gets the request later refuses it.
//
// A delayed job still waiting for its time (SubmitOptions.NotBefore) is
// cancelled by its record, then taken out of SCHEDULES, so it never
// reaches JOBS.
//
// A job without a record is looked up in JOBS, one message after
// another (its id is in its headers, which JetStream cannot search), so a
// cancel costs a read of every waiting job in the worst case.
//
// Errors: a *FinishedError (ErrFinished) when the job already has its
// outcome, ErrUnknownJob when there is no such job, and NATS errors.
func (s *Store) Cancel(ctx context.Context, id string) (Result, error) {
	if !ValidJobID(id) {
		return Result{}, fmt.Errorf("jobs: cancel: invalid job id %q", truncate(id, 300))
	}
	var (
		found        *jetstream.RawStreamMsg
		sched        *ScheduledJob
		searched     bool
		schedChecked bool
		marked       bool
	)
	for range cancelTries {
		prev, rev, err := s.record(ctx, id)
		if err != nil {
			return Result{}, fmt.Errorf("jobs: cancel %s: %w", id, err)
		}
		if rev != 0 && prev.Status.Final() {
			return Result{}, &FinishedError{Result: prev}
		}
		now := time.Now().UTC()
		rec := Result{JobID: id, Status: StatusCancelled, StartedAt: now, SubmittedAt: now}
		if rev != 0 {
			// A retrying record: the job was taken up and ran before.
			rec.Algorithm, rec.Attempts, rec.Instance, rec.Version, rec.Controller = prev.Algorithm, prev.Attempts, prev.Instance, prev.Version, prev.Controller
			rec.SubmittedAt, rec.StartedAt, rec.Error = prev.SubmittedAt, prev.StartedAt, prev.Error
		}
		if rev == 0 && found == nil && !schedChecked {
			// A delayed job waits in SCHEDULES until its time: it is
			// cancelled by its record, then taken out of SCHEDULES.
			schedChecked = true
			sj, err := s.Scheduled(ctx, id)
			switch {
			case err == nil:
				sched = &sj
			case !errors.Is(err, ErrNoResult) && !errors.Is(err, ErrNoSchedules):
				return Result{}, fmt.Errorf("jobs: cancel %s: %w", id, err)
			}
		}
		if rev == 0 && sched != nil {
			rec.Algorithm, rec.SubmittedAt = sched.Algorithm, sched.Submitted
		}
		if found == nil && rev == 0 && sched == nil {
			if searched {
				// Not in JOBS, and still no record: not a job that
				// finished while the search ran.
				return Result{}, fmt.Errorf("jobs: cancel %s: %w: no result record and no job in %s with this id", id, ErrUnknownJob, JobsStream)
			}
			if found, err = s.findJob(ctx, id); err != nil {
				return Result{}, fmt.Errorf("jobs: cancel %s: %w", id, err)
			}
			searched = true
			if found == nil {
				continue // read the record again
			}
		}
		if found != nil && rec.Algorithm == "" {
			rec.Algorithm, _ = SubjectAlgorithm(found.Subject)
			rec.SubmittedAt = found.Time.UTC()
		}
		if !discovery.ValidAlgorithmName(rec.Algorithm) {
			// A job on a subject no runner can serve: the controller
			// fails it without a record anyway.
			return Result{}, fmt.Errorf("jobs: cancel %s: the job's subject %s%s names no valid algorithm", id, JobsSubjectPrefix, truncate(rec.Algorithm, 100))
		}
		if !marked {
			if err := s.markCancel(ctx, rec.Algorithm, id); err != nil {
				return Result{}, fmt.Errorf("jobs: cancel %s: %w", id, err)
			}
			marked = true
		}
		d := float64(now.Sub(rec.StartedAt).Microseconds()) / 1000
		rec.FinishedAt, rec.DurationMS, rec.NextAttemptAt = &now, &d, nil
		data, err := json.Marshal(rec)
		if err != nil {
			return Result{}, fmt.Errorf("jobs: cancel %s: %w", id, err)
		}
		if rev == 0 {
			_, err = s.results.Create(ctx, id, data)
		} else {
			_, err = s.results.Update(ctx, id, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // the controller wrote first: look again
		}
		if err != nil {
			return Result{}, fmt.Errorf("jobs: cancel %s: store the cancelled record: %w", id, err)
		}
		if sched != nil {
			// Should the job reach JOBS between the look-up and the
			// purge, it came after the cancel mark, within the
			// controllers' allowance: they read the cancelled record.
			if _, err := s.Unschedule(ctx, id); err != nil {
				return rec, fmt.Errorf("jobs: cancel %s: cancelled, but not taken out of %s: %w", id, SchedulesStream, err)
			}
			return rec, nil
		}
		// Best effort: a runner that misses it runs the job to an
		// outcome nobody stores.
		_ = s.js.Conn().Publish(protocol.CancelSubject(rec.Algorithm), []byte(id))
		return rec, nil
	}
	return Result{}, fmt.Errorf("jobs: cancel %s: the job's record kept changing; try again", id)
}

// markCancel writes algorithm's cancel mark (CancelMarkKey), so that
// controllers read the records of its waiting jobs before running them.
// Without ServedBucket (a deployment provisioned before it) controllers
// read every record, and there is nothing to mark.
func (s *Store) markCancel(ctx context.Context, algorithm, id string) error {
	kv, err := s.servedBucket(ctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err == nil {
		_, err = kv.Put(ctx, CancelMarkKey(algorithm), []byte(id))
	}
	if err != nil {
		return fmt.Errorf("mark the cancel in bucket %s: %w", ServedBucket, err)
	}
	return nil
}

// record returns job id's record and its revision; revision 0 when there
// is none.
func (s *Store) record(ctx context.Context, id string) (Result, uint64, error) {
	e, err := s.results.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Result{}, 0, nil
	}
	if err != nil {
		return Result{}, 0, err
	}
	r, err := decodeResult(id, e.Value())
	if err != nil {
		return Result{}, 0, err
	}
	return r, e.Revision(), nil
}

// findJob returns the message of job id in JOBS, or nil when there is
// none. An id
// the controller assigned names its sequence; any other is searched for
// in the jobs' headers, oldest job first.
func (s *Store) findJob(ctx context.Context, id string) (*jetstream.RawStreamMsg, error) {
	// Every algorithm's and priority's subject (priority.go).
	filter := JobsSubjectPrefix + ">"
	if ReservedJobID(id) {
		seqPart, _, _ := strings.Cut(strings.TrimPrefix(id, autoPrefix), "-")
		seq, err := strconv.ParseUint(seqPart, 10, 64)
		if err != nil {
			return nil, nil
		}
		m, err := s.jobs.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find the job in %s: %w", JobsStream, err)
		}
		if msgJobID(m) != id {
			return nil, nil
		}
		return m, nil
	}
	for seq := uint64(1); ; {
		m, err := s.jobs.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find the job in %s: %w", JobsStream, err)
		}
		if msgJobID(m) == id {
			return m, nil
		}
		seq = m.Sequence + 1
	}
}

// msgJobID names the job of a message of JOBS as the controller does:
// Pnp-Job-Id, else Nats-Msg-Id, else the id derived from its sequence and
// stored time.
func msgJobID(m *jetstream.RawStreamMsg) string {
	if id := m.Header.Get(HeaderJobID); id != "" {
		return id
	}
	if id := m.Header.Get(HeaderMsgID); id != "" {
		return id
	}
	return autoPrefix + strconv.FormatUint(m.Sequence, 10) + "-" + strconv.FormatInt(m.Time.UnixMilli(), 10)
}

// Purge drops every job of algorithm that waits in JOBS, of every
// priority, and returns how
// many it dropped. The dropped jobs leave no result record and no dead
// letter: their ids become unknown. A job a controller runs at that moment
// goes on to its outcome. It needs the right to purge JOBS, which only
// the admin role has (nats.conf).
func (s *Store) Purge(ctx context.Context, algorithm string) (uint64, error) {
	if !discovery.ValidAlgorithmName(algorithm) {
		return 0, fmt.Errorf("jobs: purge: invalid algorithm name %q", truncate(algorithm, 100))
	}
	var total uint64
	for _, p := range Priorities {
		n, err := s.purgeSubject(ctx, algorithm, JobSubject(algorithm, p))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// purgeSubject purges subject of JOBS, one of algorithm's.
func (s *Store) purgeSubject(ctx context.Context, algorithm, subject string) (uint64, error) {
	req, err := json.Marshal(jetstream.StreamPurgeRequest{Subject: subject})
	if err != nil {
		return 0, fmt.Errorf("jobs: purge %s: %w", algorithm, err)
	}
	o := s.js.Options()
	prefix := jetstream.DefaultAPIPrefix
	switch {
	case o.APIPrefix != "":
		prefix = strings.TrimSuffix(o.APIPrefix, ".") + "."
	case o.Domain != "":
		prefix = "$JS." + o.Domain + ".API."
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	msg, err := s.js.Conn().RequestWithContext(ctx, prefix+"STREAM.PURGE."+JobsStream, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, fmt.Errorf("jobs: purge %s: no answer from JetStream (is this user allowed to purge %s? only the admin role is): %w", algorithm, JobsStream, err)
	}
	if err != nil {
		return 0, fmt.Errorf("jobs: purge %s: %w", algorithm, err)
	}
	var resp struct {
		Success bool                `json:"success"`
		Purged  uint64              `json:"purged"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("jobs: purge %s: %w", algorithm, err)
	}
	if resp.Error != nil {
		return 0, fmt.Errorf("jobs: purge %s: %w", algorithm, resp.Error)
	}
	return resp.Purged, nil
}
