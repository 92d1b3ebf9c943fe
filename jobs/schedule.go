package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	"github.com/pnpworker/pnpworker/discovery"
)

// Delayed and periodic jobs are JetStream message schedules (nats-server
// 2.12 and later for @at, 2.14 for @every and cron) in stream
// SchedulesStream. The server fires each schedule into
// ScheduleDuePrefix+<algorithm> of the same stream, and JOBS sources those
// subjects as jobs.<algorithm>: no process of the system keeps a timer,
// and a schedule lives, like a job, in a file-backed stream.
const (
	// SchedulesStream holds the schedules and the jobs they fired.
	SchedulesStream = "SCHEDULES"
	// ScheduleSubjectPrefix begins every subject of SchedulesStream.
	ScheduleSubjectPrefix = "schedule."
	// ScheduleJobPrefix+<job id> holds the schedule of one delayed job
	// (Nats-Schedule: @at <time>); the server removes it when it fires.
	ScheduleJobPrefix = "schedule.job."
	// ScheduleEveryPrefix+<name> holds a periodic schedule (@every or
	// cron), until it is removed.
	ScheduleEveryPrefix = "schedule.every."
	// ScheduleDuePrefix+<algorithm> receives the jobs the schedules fire;
	// JOBS sources them onto jobs.<algorithm>.
	ScheduleDuePrefix = "schedule.due."
	// DefaultSchedulesMaxBytes bounds stream SCHEDULES.
	DefaultSchedulesMaxBytes = 64 << 20
	// ScheduleDueTTL is how long a fired job stays in SCHEDULES: JOBS
	// takes it within milliseconds, or, while JOBS refuses it (full), as
	// soon as it has room; a job JOBS could not take for this long is
	// dropped.
	ScheduleDueTTL = time.Hour
)

// Headers of the schedules and of the jobs they fire.
const (
	// HeaderNotBefore is the earliest time a delayed job may run, RFC
	// 3339; on the HTTP API it asks for a delayed job.
	HeaderNotBefore = "Pnp-Not-Before"
	// headerScheduler and headerScheduleNext are what the server adds to
	// a fired job: the schedule's subject and when it fires next (or
	// "purge" for a one-shot schedule).
	headerScheduler    = "Nats-Scheduler"
	headerScheduleNext = "Nats-Schedule-Next"
)

// StatusScheduled is the status Result reports for a delayed job whose
// time has not come: no record is stored for it, the schedule is.
const StatusScheduled Status = "scheduled"

// ErrNoSchedules is wrapped by the errors of delayed submissions and of
// the schedule operations when stream SCHEDULES does not exist (a
// deployment provisioned by an older version: pnp provision adds it).
var ErrNoSchedules = errors.New("stream " + SchedulesStream + " not provisioned")

// ErrNoSchedule is wrapped by RemoveSchedule's error for a name without a
// schedule.
var ErrNoSchedule = errors.New("no such schedule")

// scheduleNameRE is what a schedule name may be: the name begins each of
// its runs' job ids and is a subject token.
var scheduleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidScheduleName reports whether name can name a periodic schedule:
// 1 to 64 letters, digits, '_' and '-', starting with a letter or digit,
// and not auto or auto-..., the prefix of the ids the controller assigns.
func ValidScheduleName(name string) bool {
	return scheduleNameRE.MatchString(name) && name != "auto" && !ReservedJobID(name+"-")
}

// cronParser reads the cron expressions nats-server takes: six fields,
// seconds first, or one of @yearly, @monthly, @weekly, @daily, @hourly.
var cronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a periodic job: every Every, or at the times of Cron, the
// server stores a job of Algorithm with Input in JOBS. Its JSON form is
// what GET /v1/schedules lists.
type Schedule struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	// Every is the interval, at least 1 s; exactly one of Every and Cron
	// is set.
	Every time.Duration `json:"-"`
	// Cron is a cron expression of six fields (seconds, minutes, hours,
	// day of month, month, day of week) or @yearly, @monthly, @weekly,
	// @daily, @hourly, in UTC.
	Cron  string          `json:"cron,omitempty"`
	Input json.RawMessage `json:"input"`
	// Timeout is each run's time budget (Pnp-Timeout); zero: the
	// algorithm's own.
	Timeout time.Duration `json:"-"`
	// Priority of each run; the zero value is PriorityNormal.
	Priority Priority `json:"priority,omitempty"`
	// Created is when the schedule was stored (set by ListSchedules).
	Created time.Time `json:"created"`
	// NextRun is when it fires next, computed from the spec (set by
	// ListSchedules): for Every, counted in whole intervals from Created,
	// as the server counts unless it was down at a run's time.
	NextRun time.Time `json:"next_run"`
}

// MarshalJSON writes Every and Timeout as Go durations ("1m0s").
func (s Schedule) MarshalJSON() ([]byte, error) {
	type plain Schedule
	j := struct {
		plain
		Every   string `json:"every,omitempty"`
		Timeout string `json:"timeout,omitempty"`
	}{plain: plain(s)}
	if s.Every > 0 {
		j.Every = s.Every.String()
	}
	if s.Timeout > 0 {
		j.Timeout = s.Timeout.String()
	}
	return json.Marshal(j)
}

// Spec is the schedule as nats-server reads it: "@every 1m0s" or the cron
// expression.
func (s Schedule) Spec() string {
	if s.Every > 0 {
		return "@every " + s.Every.String()
	}
	return s.Cron
}

// Validate reports every problem with s, naming the field.
func (s Schedule) Validate() error {
	var errs []error
	if !ValidScheduleName(s.Name) {
		errs = append(errs, fmt.Errorf("name %q: want 1 to 64 letters, digits, '_' and '-', starting with a letter or digit, not auto", truncate(s.Name, 100)))
	}
	if !discovery.ValidAlgorithmName(s.Algorithm) {
		errs = append(errs, fmt.Errorf("algorithm %q: not an algorithm name", truncate(s.Algorithm, 100)))
	}
	switch {
	case s.Every != 0 && s.Cron != "":
		errs = append(errs, errors.New("every and cron: give one, not both"))
	case s.Every == 0 && s.Cron == "":
		errs = append(errs, errors.New("every or cron: give one"))
	case s.Every != 0 && s.Every < time.Second:
		errs = append(errs, fmt.Errorf("every %s: want at least 1s", s.Every))
	case s.Every != 0 && s.Every%time.Second != 0:
		errs = append(errs, fmt.Errorf("every %s: want whole seconds", s.Every))
	case s.Cron != "":
		if err := checkCron(s.Cron); err != nil {
			errs = append(errs, err)
		}
	}
	if !json.Valid(s.Input) {
		errs = append(errs, errors.New("input: not valid JSON"))
	}
	if s.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout %s is negative", s.Timeout))
	}
	if _, err := ParsePriority(string(s.Priority)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkCron accepts what nats-server's cron takes: six fields or a
// descriptor.
func checkCron(expr string) error {
	if !strings.HasPrefix(expr, "@") && len(strings.Fields(expr)) != 6 {
		return fmt.Errorf("cron %q: want six fields (seconds minutes hours day-of-month month day-of-week) or @yearly, @monthly, @weekly, @daily, @hourly", truncate(expr, 100))
	}
	if strings.HasPrefix(expr, "@every") {
		return fmt.Errorf("cron %q: use every for intervals", truncate(expr, 100))
	}
	if _, err := cronParser.Parse(expr); err != nil {
		return fmt.Errorf("cron %q: %w", truncate(expr, 100), err)
	}
	return nil
}

// nextRun is when s fires next after now: cron's next time, or the next
// whole interval counted from created (rounded to the second, as the
// server rounds).
func (s Schedule) nextRun(created, now time.Time) time.Time {
	if s.Every > 0 {
		t0 := created.UTC().Round(time.Second)
		if !now.After(t0) {
			return t0.Add(s.Every)
		}
		n := now.Sub(t0)/s.Every + 1
		return t0.Add(n * s.Every)
	}
	sch, err := cronParser.Parse(s.Cron)
	if err != nil {
		return time.Time{}
	}
	return sch.Next(now.UTC())
}

// schedules returns stream SCHEDULES, or an error wrapping ErrNoSchedules.
func (s *Store) schedulesStream() (jetstream.Stream, error) {
	if s.schedules == nil {
		return nil, fmt.Errorf("jobs: %w: 'pnp provision' creates it", ErrNoSchedules)
	}
	return s.schedules, nil
}

// submitAt stores a delayed job: a one-shot schedule under the job id that
// fires the job into JOBS at notBefore. msg is the job as Submit built it.
func (s *Store) submitAt(ctx context.Context, msg *nats.Msg, algorithm string, prio Priority, id string, notBefore time.Time) (Submission, error) {
	st, err := s.schedulesStream()
	if err != nil {
		return Submission{}, err
	}
	msg.Subject = ScheduleJobPrefix + id
	at := notBefore.UTC().Truncate(time.Second)
	if at.Before(notBefore) {
		at = at.Add(time.Second) // never before the time asked for
	}
	msg.Header.Set(HeaderJobID, id)
	msg.Header.Set(HeaderNotBefore, at.Format(time.RFC3339))
	msg.Header.Set("Nats-Schedule", "@at "+at.Format(time.RFC3339))
	msg.Header.Set("Nats-Schedule-Target", ScheduleDuePrefix+algorithm+prio.subjectSuffix())
	msg.Header.Set("Nats-Schedule-TTL", ScheduleDueTTL.String())
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(st.CachedInfo().Config.Name))
	if err != nil {
		return Submission{}, fmt.Errorf("jobs: submit %s: schedule: %w", id, err)
	}
	return Submission{ID: id, Seq: ack.Sequence, Duplicate: ack.Duplicate, NotBefore: at}, nil
}

// ScheduledJob is a delayed job waiting for its time.
type ScheduledJob struct {
	ID        string
	Algorithm string
	NotBefore time.Time
	// Submitted is when the schedule was stored.
	Submitted time.Time
	// Seq is the schedule's sequence in SCHEDULES.
	Seq uint64
}

// Scheduled returns the delayed job id while it waits for its time; it
// fails with ErrNoResult when there is none (never delayed, or already in
// JOBS).
func (s *Store) Scheduled(ctx context.Context, id string) (ScheduledJob, error) {
	if !ValidJobID(id) {
		return ScheduledJob{}, fmt.Errorf("jobs: invalid job id %q", id)
	}
	st, err := s.schedulesStream()
	if err != nil {
		return ScheduledJob{}, err
	}
	m, err := st.GetLastMsgForSubject(ctx, ScheduleJobPrefix+id)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return ScheduledJob{}, fmt.Errorf("jobs: job %s: %w", id, ErrNoResult)
	}
	if err != nil {
		return ScheduledJob{}, fmt.Errorf("jobs: scheduled job %s: %w", id, err)
	}
	return scheduledJob(id, m), nil
}

func scheduledJob(id string, m *jetstream.RawStreamMsg) ScheduledJob {
	alg, _ := SubjectAlgorithm(JobsSubjectPrefix + strings.TrimPrefix(m.Header.Get("Nats-Schedule-Target"), ScheduleDuePrefix))
	j := ScheduledJob{ID: id, Submitted: m.Time.UTC(), Seq: m.Sequence, Algorithm: alg}
	j.NotBefore, _ = time.Parse(time.RFC3339, m.Header.Get(HeaderNotBefore))
	return j
}

// record is the scheduled job as Result reports it.
func (j ScheduledJob) record() Result {
	nb := j.NotBefore
	return Result{JobID: j.ID, Algorithm: j.Algorithm, Status: StatusScheduled,
		SubmittedAt: j.Submitted, StartedAt: nb, NotBefore: &nb}
}

// Unschedule removes delayed job id before its time, and reports whether
// it was still waiting: false when there was no such delayed job or it has
// already gone to JOBS.
func (s *Store) Unschedule(ctx context.Context, id string) (bool, error) {
	if _, err := s.Scheduled(ctx, id); errors.Is(err, ErrNoResult) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := s.schedules.Purge(ctx, jetstream.WithPurgeSubject(ScheduleJobPrefix+id)); err != nil {
		return false, fmt.Errorf("jobs: unschedule %s: %w", id, err)
	}
	return true, nil
}

// AddSchedule stores sch; a schedule of the same name is replaced. Its
// first run comes one interval after now, or at the next time of its
// cron expression.
func (s *Store) AddSchedule(ctx context.Context, sch Schedule) error {
	if err := sch.Validate(); err != nil {
		return fmt.Errorf("jobs: schedule: %w", err)
	}
	st, err := s.schedulesStream()
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: ScheduleEveryPrefix + sch.Name, Data: sch.Input, Header: nats.Header{}}
	msg.Header.Set("Nats-Schedule", sch.Spec())
	prio, _ := ParsePriority(string(sch.Priority))
	msg.Header.Set("Nats-Schedule-Target", ScheduleDuePrefix+sch.Algorithm+prio.subjectSuffix())
	msg.Header.Set("Nats-Schedule-TTL", ScheduleDueTTL.String())
	if sch.Timeout > 0 {
		msg.Header.Set(HeaderTimeout, sch.Timeout.String())
	}
	if prio != PriorityNormal {
		msg.Header.Set(HeaderPriority, string(prio))
	}
	if err := s.checkSize(msg, sch.Name); err != nil {
		return fmt.Errorf("jobs: schedule %s: %w", sch.Name, err)
	}
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(st.CachedInfo().Config.Name)); err != nil {
		return fmt.Errorf("jobs: schedule %s: %w", sch.Name, err)
	}
	return nil
}

// RemoveSchedule deletes the schedule name; runs already fired stay. It
// fails with an error wrapping ErrNoSchedule when there is none.
func (s *Store) RemoveSchedule(ctx context.Context, name string) error {
	if !ValidScheduleName(name) {
		return fmt.Errorf("jobs: invalid schedule name %q", truncate(name, 100))
	}
	st, err := s.schedulesStream()
	if err != nil {
		return err
	}
	if _, err := st.GetLastMsgForSubject(ctx, ScheduleEveryPrefix+name); errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("jobs: schedule %s: %w", name, ErrNoSchedule)
	} else if err != nil {
		return fmt.Errorf("jobs: schedule %s: %w", name, err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject(ScheduleEveryPrefix+name)); err != nil {
		return fmt.Errorf("jobs: remove schedule %s: %w", name, err)
	}
	return nil
}

// ListSchedules returns the periodic schedules by name, each with its
// next run after now.
func (s *Store) ListSchedules(ctx context.Context) ([]Schedule, error) {
	st, err := s.schedulesStream()
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(ScheduleEveryPrefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("jobs: schedules: %w", err)
	}
	names := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		names = append(names, strings.TrimPrefix(subj, ScheduleEveryPrefix))
	}
	sort.Strings(names)
	now := time.Now()
	out := make([]Schedule, 0, len(names))
	for _, name := range names {
		m, err := st.GetLastMsgForSubject(ctx, ScheduleEveryPrefix+name)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("jobs: schedule %s: %w", name, err)
		}
		out = append(out, scheduleOf(name, m, now))
	}
	return out, nil
}

// scheduleOf reads a stored schedule back.
func scheduleOf(name string, m *jetstream.RawStreamMsg, now time.Time) Schedule {
	alg, prio := SubjectAlgorithm(JobsSubjectPrefix + strings.TrimPrefix(m.Header.Get("Nats-Schedule-Target"), ScheduleDuePrefix))
	sch := Schedule{Name: name, Input: json.RawMessage(m.Data), Created: m.Time.UTC(), Algorithm: alg}
	if prio != PriorityNormal {
		sch.Priority = prio
	}
	spec := m.Header.Get("Nats-Schedule")
	if d, ok := strings.CutPrefix(spec, "@every "); ok {
		sch.Every, _ = time.ParseDuration(d)
	} else {
		sch.Cron = spec
	}
	sch.Timeout, _ = time.ParseDuration(m.Header.Get(HeaderTimeout))
	sch.NextRun = sch.nextRun(sch.Created, now)
	return sch
}

// ScheduledRunID is the job id of a run of a periodic schedule, from the
// headers the server puts on it: the schedule's name, '-', and the time
// the schedule fires next after this run (Nats-Schedule-Next) in UTC,
// 20060102T150405Z. Each run has its own, and a redelivered run the same
// one. It returns "" for any other message.
func ScheduledRunID(h nats.Header) string {
	name, ok := strings.CutPrefix(h.Get(headerScheduler), ScheduleEveryPrefix)
	if !ok || !ValidScheduleName(name) {
		return ""
	}
	next, err := time.Parse(time.RFC3339Nano, h.Get(headerScheduleNext))
	if err != nil {
		return ""
	}
	return name + "-" + next.UTC().Format("20060102T150405Z")
}
