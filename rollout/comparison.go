package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CompareStream is the JetStream stream of comparisons, on subjects
// CompareSubjectPrefix+<algorithm>.
const (
	CompareStream        = "COMPARE"
	CompareSubjectPrefix = "compare."
)

// Sources of a comparison.
const (
	SourceShadow = "shadow"
	SourceReplay = "replay"
)

// Comparison is one input run on two versions: the stable version's
// answer against the candidate's. Its JSON form is defined by
// schemas/comparison.json.
type Comparison struct {
	Algorithm        string `json:"algorithm"`
	JobID            string `json:"job_id,omitempty"`
	Source           string `json:"source"`
	StableVersion    string `json:"stable_version"`
	CandidateVersion string `json:"candidate_version"`
	// Equal is true when both answered alike: the same error code, or
	// outputs without differences.
	Equal bool   `json:"equal"`
	Diffs []Diff `json:"diffs,omitempty"`
	// StableMS and CandidateMS are the latencies in milliseconds.
	StableMS    float64 `json:"stable_ms"`
	CandidateMS float64 `json:"candidate_ms"`
	// StableError and CandidateError are "<code>: <message>" of an error
	// answer (or of no answer at all).
	StableError    string `json:"stable_error,omitempty"`
	CandidateError string `json:"candidate_error,omitempty"`
	// NotCompared, when set, says why there is no verdict: both versions
	// answered with an output, and one stored by reference could not be
	// read by the comparer (gone after its TTL, over the size limit, the
	// store unavailable), which is neither version's doing. Such a
	// comparison is neither equal nor different: reports count it apart.
	// When either version answered with an error, the verdict needs no
	// output and there is always one.
	NotCompared string    `json:"not_compared,omitempty"`
	At          time.Time `json:"at"`
}

// Decide fills Equal and Diffs from the two answers: outputs (when neither
// failed) and error strings.
func (c *Comparison) Decide(stable, candidate []byte, o CompareOptions) {
	switch {
	case c.StableError != "" || c.CandidateError != "":
		c.Equal = errorCode(c.StableError) == errorCode(c.CandidateError)
	default:
		c.Diffs = Compare(stable, candidate, o)
		c.Equal = len(c.Diffs) == 0
	}
}

// Recompare returns c with the differences o ignores or tolerates
// dropped, so that a report can apply other options than the comparer
// that stored c. A stored comparison keeps the differing values only,
// so a looser tolerance or an ignore list can only remove differences,
// never find new ones; a value recorded cut (Truncated) is kept unless
// o ignores its pointer. A comparison decided on error answers, or not
// compared, is returned as it is.
func (c Comparison) Recompare(o CompareOptions) Comparison {
	if c.StableError != "" || c.CandidateError != "" || c.NotCompared != "" {
		return c
	}
	var kept []Diff
	for _, d := range c.Diffs {
		a, b := d.Stable, d.Candidate
		if d.Truncated {
			// Cut values may agree where the whole ones did not: only
			// the ignore list applies to them.
			a, b = []byte(`"a"`), []byte(`"b"`)
		}
		if len(Compare(wrapAt(d.Pointer, a), wrapAt(d.Pointer, b), o)) > 0 {
			kept = append(kept, d)
		}
	}
	c.Diffs, c.Equal = kept, len(kept) == 0
	return c
}

// wrapAt rebuilds a document holding v at pointer ptr, so Compare applies
// its ignore list and per-field tolerance to the right path. An absent
// value (nil) becomes a string no output holds.
func wrapAt(ptr string, v []byte) []byte {
	if v == nil {
		v = []byte(`"\u0000absent"`)
	}
	toks := strings.Split(ptr, "/")[1:]
	out := string(v)
	for i := len(toks) - 1; i >= 0; i-- {
		k := strings.ReplaceAll(strings.ReplaceAll(toks[i], "~1", "/"), "~0", "~")
		q, _ := json.Marshal(k)
		out = "{" + string(q) + ":" + out + "}"
	}
	return []byte(out)
}

func errorCode(e string) string {
	for i := range len(e) {
		if e[i] == ':' {
			return e[:i]
		}
	}
	return e
}

// CompareConfig configures the COMPARE stream. The zero value keeps at
// most DefaultCompareMaxBytes for DefaultCompareMaxAge, one replica, file
// storage; the oldest comparisons go first.
type CompareConfig struct {
	MaxBytes int64
	MaxAge   time.Duration
	Replicas int
	// Placement puts the stream in a cluster or on tagged servers;
	// nil: the cluster of the provisioning client's server.
	Placement *jetstream.Placement
}

// Defaults of CompareConfig.
const (
	DefaultCompareMaxBytes = 64 << 20
	DefaultCompareMaxAge   = 7 * 24 * time.Hour
)

func (c *CompareConfig) setDefaults() {
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultCompareMaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultCompareMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
}

// Validate reports every problem with c.
func (c CompareConfig) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("rollout: compare max bytes %d is negative", c.MaxBytes))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("rollout: compare max age %s is negative", c.MaxAge))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("rollout: replicas %d out of range 1..5", c.Replicas))
	}
	return errors.Join(errs...)
}

// ProvisionCompare creates or updates the COMPARE stream.
func ProvisionCompare(ctx context.Context, js jetstream.JetStream, cfg CompareConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        CompareStream,
		Description: "pnpworker: outputs of a stable and a candidate version compared, per algorithm",
		Subjects:    []string{CompareSubjectPrefix + "*"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Placement:   cfg.Placement,
		MaxBytes:    cfg.MaxBytes,
		MaxAge:      cfg.MaxAge,
		Discard:     jetstream.DiscardOld,
		// Only the gateway and admin tools read it, with a consumer
		// deleted after each read (runners create none).
		MaxConsumers: DefaultMaxConsumers,
	})
	if err != nil {
		return nil, fmt.Errorf("rollout: provision stream %s: %w", CompareStream, err)
	}
	return s, nil
}

// ReadComparisons returns the comparisons of algorithm stored since
// since (zero: all kept), at most limit of the newest (0: no limit).
func ReadComparisons(ctx context.Context, js jetstream.JetStream, algorithm string, since time.Time, limit int) ([]Comparison, error) {
	return readRecords[Comparison](ctx, js, CompareStream, CompareSubjectPrefix+algorithm, since, limit)
}

// readRecords reads the JSON records on subject of stream with an
// ordered consumer, from since or the last limit ones.
func readRecords[T any](ctx context.Context, js jetstream.JetStream, stream, subject string, since time.Time, limit int) ([]T, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("rollout: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("rollout: stream %s: %w", stream, err)
	}
	count := info.State.Subjects[subject]
	if count == 0 {
		return nil, nil
	}
	// The consumer is deleted after the read; should that fail, the
	// server drops it soon (the library's default keeps one 5 minutes).
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, InactiveThreshold: 30 * time.Second}
	switch {
	case !since.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
		if limit > 0 && count > uint64(limit) {
			// The last limit records only: start near the end of the
			// stream, at this subject's share of its sequences with room
			// to spare, rather than read every record of the subject.
			first, last := info.State.FirstSeq, info.State.LastSeq
			span := uint64(float64(limit)*float64(last-first+1)/float64(count)*1.5) + 100
			if span < last-first+1 {
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last-span+1
			}
		}
	}
	open := func() (jetstream.Consumer, *jetstream.ConsumerInfo, error) {
		cons, err := s.OrderedConsumer(ctx, cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("rollout: read %s: %w", subject, err)
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("rollout: read %s: %w", subject, err)
		}
		return cons, ci, nil
	}
	cons, ci, err := open()
	if err != nil {
		return nil, err
	}
	if cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && ci.NumPending < uint64(limit) {
		// The subject's records bunch up earlier in the stream: read
		// them all. The probe's consumer goes (it would expire anyway).
		_ = s.DeleteConsumer(ctx, ci.Name)
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverAllPolicy, 0
		if cons, ci, err = open(); err != nil {
			return nil, err
		}
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	want := int(ci.NumPending)
	var out []T
	for got := 0; got < want; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch, err := cons.Fetch(min(500, want-got), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("rollout: read %s: %w", subject, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var v T
			if err := json.Unmarshal(m.Data(), &v); err == nil {
				out = append(out, v)
			}
		}
		if n == 0 {
			break // what is left expired meanwhile
		}
		got += n
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// FieldReport is one output field that differs.
type FieldReport struct {
	Pointer  string   `json:"pointer"`
	Count    int      `json:"count"`
	Examples []string `json:"example_job_ids"`
}

// VersionReport is one version's errors and latencies over a report.
type VersionReport struct {
	Version   string  `json:"version"`
	Runs      int     `json:"runs"`
	Errors    int     `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
}

// Report summarizes comparisons: how often the candidate agrees with the
// stable version, which fields differ most (with example job ids), and
// errors and latency per version.
type Report struct {
	Algorithm string `json:"algorithm"`
	// Total counts the comparisons with a verdict; NotCompared those
	// without one (Comparison.NotCompared), left out of the agreement and
	// the fields (their runs still count in Versions).
	Total       int `json:"total"`
	NotCompared int `json:"not_compared"`
	// NotComparedReason is the reason of the first of them.
	NotComparedReason string          `json:"not_compared_reason,omitempty"`
	Agree             int             `json:"agree"`
	Agreement         float64         `json:"agreement"`
	Fields            []FieldReport   `json:"fields"`
	Versions          []VersionReport `json:"versions"`
}

// MaxExamples bounds the example job ids per field in a report.
const MaxExamples = 5

// Summarize builds the report of cs.
func Summarize(algorithm string, cs []Comparison) Report {
	r := Report{Algorithm: algorithm, Fields: []FieldReport{}, Versions: []VersionReport{}}
	fields := map[string]*FieldReport{}
	type lat struct {
		ms     []float64
		errors int
	}
	vers := map[string]*lat{}
	var order []string
	note := func(v string, ms float64, failed bool) {
		l, ok := vers[v]
		if !ok {
			l = &lat{}
			vers[v] = l
			order = append(order, v)
		}
		l.ms = append(l.ms, ms)
		if failed {
			l.errors++
		}
	}
	for _, c := range cs {
		// Every run counts in its version's latency and errors; only
		// those with a verdict count in the agreement.
		note(c.StableVersion, c.StableMS, c.StableError != "")
		note(c.CandidateVersion, c.CandidateMS, c.CandidateError != "")
		if c.NotCompared != "" {
			if r.NotCompared++; r.NotCompared == 1 {
				r.NotComparedReason = c.NotCompared
			}
			continue
		}
		r.Total++
		if c.Equal {
			r.Agree++
		}
		for _, d := range c.Diffs {
			f, ok := fields[d.Pointer]
			if !ok {
				f = &FieldReport{Pointer: d.Pointer, Examples: []string{}}
				fields[d.Pointer] = f
			}
			f.Count++
			if len(f.Examples) < MaxExamples && c.JobID != "" {
				f.Examples = append(f.Examples, c.JobID)
			}
		}
	}
	if r.Total > 0 {
		r.Agreement = float64(r.Agree) / float64(r.Total)
	}
	for _, f := range fields {
		r.Fields = append(r.Fields, *f)
	}
	sort.Slice(r.Fields, func(i, j int) bool {
		if r.Fields[i].Count != r.Fields[j].Count {
			return r.Fields[i].Count > r.Fields[j].Count
		}
		return r.Fields[i].Pointer < r.Fields[j].Pointer
	})
	for _, v := range order {
		l := vers[v]
		sort.Float64s(l.ms)
		r.Versions = append(r.Versions, VersionReport{Version: v, Runs: len(l.ms), Errors: l.errors,
			ErrorRate: float64(l.errors) / float64(len(l.ms)), P50MS: quantile(l.ms, 0.50), P99MS: quantile(l.ms, 0.99)})
	}
	return r
}

// quantile of sorted xs, nearest rank.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}
