package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/objref"
)

// HistoryStream is the JetStream stream of sampled job inputs with the
// outputs they got, on subjects HistorySubjectPrefix+<algorithm>: what
// Replay runs against a candidate version.
const (
	HistoryStream        = "HISTORY"
	HistorySubjectPrefix = "history."
)

// HistoryRecord is one sampled job: its input and the output the version
// that ran it gave, with the time it took.
type HistoryRecord struct {
	Algorithm string          `json:"algorithm"`
	JobID     string          `json:"job_id"`
	Version   string          `json:"version"`
	Input     json.RawMessage `json:"input"`
	Output    json.RawMessage `json:"output"`
	// OutputRef replaces Output when the output did not fit a message:
	// the obj:// reference the runner stored it at (bucket outputs).
	OutputRef string    `json:"output_ref,omitempty"`
	MS        float64   `json:"ms"`
	At        time.Time `json:"at"`
}

// recordedRef is the reference of an output recorded by reference:
// OutputRef, or, in records written before it existed, an Output that is
// only the runner's {"output_ref": ...} reply body.
func (r HistoryRecord) recordedRef() string {
	if r.OutputRef != "" {
		return r.OutputRef
	}
	var body map[string]json.RawMessage
	if len(r.Output) > 0 && r.Output[0] == '{' && json.Unmarshal(r.Output, &body) == nil && len(body) == 1 {
		var ref string
		if json.Unmarshal(body["output_ref"], &ref) == nil {
			if r, err := objref.Parse(ref); err == nil && objref.IsOutputsBucket(r.Bucket) {
				return ref
			}
		}
	}
	return ""
}

// HistoryConfig configures the sampling of job inputs. The zero value
// records DefaultHistoryRate of succeeded jobs, keeps at most
// DefaultHistoryMaxBytes for DefaultHistoryMaxAge (oldest go first), one
// replica, file storage.
type HistoryConfig struct {
	// Rate is the share of succeeded jobs recorded, 0..1; negative
	// disables recording. Default DefaultHistoryRate.
	Rate     float64
	MaxBytes int64
	MaxAge   time.Duration
	Replicas int
	// Placement puts the stream in a cluster or on tagged servers;
	// nil: the cluster of the provisioning client's server.
	Placement *jetstream.Placement
}

// Defaults of HistoryConfig.
const (
	DefaultHistoryRate     = 0.1
	DefaultHistoryMaxBytes = 128 << 20
	DefaultHistoryMaxAge   = 7 * 24 * time.Hour
)

// SetDefaults fills the zero fields of c with the defaults.
func (c *HistoryConfig) SetDefaults() {
	if c.Rate == 0 {
		c.Rate = DefaultHistoryRate
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultHistoryMaxBytes
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultHistoryMaxAge
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
}

// Validate reports every problem with c.
func (c HistoryConfig) Validate() error {
	var errs []error
	if c.Rate > 1 {
		errs = append(errs, fmt.Errorf("rollout: history rate %g is above 1", c.Rate))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("rollout: history max bytes %d is negative", c.MaxBytes))
	}
	if c.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("rollout: history max age %s is negative", c.MaxAge))
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("rollout: replicas %d out of range 1..5", c.Replicas))
	}
	return errors.Join(errs...)
}

// ProvisionHistory creates or updates the HISTORY stream.
func ProvisionHistory(ctx context.Context, js jetstream.JetStream, cfg HistoryConfig) (jetstream.Stream, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        HistoryStream,
		Description: "pnpworker: sampled job inputs and their outputs, per algorithm, for replay against a candidate",
		Subjects:    []string{HistorySubjectPrefix + "*"},
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
		return nil, fmt.Errorf("rollout: provision stream %s: %w", HistoryStream, err)
	}
	return s, nil
}

// ReadHistory returns the recorded jobs of algorithm since since (zero:
// all kept), at most limit of the newest (0: no limit).
func ReadHistory(ctx context.Context, js jetstream.JetStream, algorithm string, since time.Time, limit int) ([]HistoryRecord, error) {
	return readRecords[HistoryRecord](ctx, js, HistoryStream, HistorySubjectPrefix+algorithm, since, limit)
}

// ReplayConfig is what Replay runs.
type ReplayConfig struct {
	// Algorithm and Version name the candidate; requests go to its pinned
	// subject.
	Algorithm, Version string
	// Since and Last select the recorded jobs (see ReadHistory). Default:
	// the last 1000.
	Since time.Time
	Last  int
	// Compare sets tolerance and ignored fields.
	Compare CompareOptions
	// Concurrency bounds the requests in flight. Default 4.
	Concurrency int
	// Timeout bounds each request. Default 30 s.
	Timeout time.Duration
	// MaxOutputBytes bounds an output stored by reference (recorded or
	// the candidate's) that is read back to be compared. Default
	// DefaultMaxOutputBytes.
	MaxOutputBytes int64
}

// DefaultMaxOutputBytes bounds an output by reference read for a
// comparison.
const DefaultMaxOutputBytes = 16 << 20

// Header names of the protocol used by Replay (the runner package defines
// them too; rollout sits below it).
const (
	headerJobID     = "Pnp-Job-Id"
	headerTimeout   = "Pnp-Timeout"
	headerOutputRef = "Pnp-Output-Ref"
)

// ReplyOutput is the output a successful reply carries: its body, or,
// when the runner stored the output by reference (header
// Pnp-Output-Ref), the object it names in bucket outputs, read whole
// within maxBytes (<= 0: DefaultMaxOutputBytes). Two answers are
// compared by their outputs, never by where they were stored.
func ReplyOutput(ctx context.Context, js jetstream.JetStream, reply *nats.Msg, maxBytes int64) ([]byte, error) {
	return storedOutput(ctx, js, reply.Data, reply.Header.Get(headerOutputRef), maxBytes)
}

func storedOutput(ctx context.Context, js jetstream.JetStream, data []byte, ref string, maxBytes int64) ([]byte, error) {
	if ref == "" {
		return data, nil
	}
	r, err := objref.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("output reference: %w", err)
	}
	if !objref.IsOutputsBucket(r.Bucket) {
		return nil, fmt.Errorf("output reference %s: not in an outputs bucket (%s, %s)", r, objref.OutputsBucket, objref.OutputsBucketFor("<algorithm>"))
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxOutputBytes
	}
	return objref.Read(ctx, js, r, maxBytes)
}

// Replay re-runs recorded job inputs on a candidate version and compares
// each answer with the recorded output. A candidate that rejects an input
// counts as an error in the comparisons, never as a failed job: replay
// touches no job.
func Replay(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, cfg ReplayConfig) ([]Comparison, error) {
	if cfg.Last == 0 && cfg.Since.IsZero() {
		cfg.Last = 1000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	recs, err := ReadHistory(ctx, js, cfg.Algorithm, cfg.Since, cfg.Last)
	if err != nil {
		return nil, err
	}
	out := make([]Comparison, len(recs))
	subject := discovery.PinnedSubject(cfg.Algorithm, cfg.Version)
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for i, r := range recs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = replayOne(ctx, nc, js, subject, cfg, r)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func replayOne(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, subject string, cfg ReplayConfig, r HistoryRecord) Comparison {
	c := Comparison{Algorithm: cfg.Algorithm, JobID: r.JobID, Source: SourceReplay, StableVersion: r.Version,
		CandidateVersion: cfg.Version, StableMS: r.MS}
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	msg := &nats.Msg{Subject: subject, Data: r.Input,
		Header: nats.Header{headerJobID: {r.JobID}, headerTimeout: {cfg.Timeout.String()}}}
	start := time.Now()
	reply, err := nc.RequestMsgWithContext(rctx, msg)
	c.CandidateMS = ms(time.Since(start))
	var got []byte
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		c.CandidateError = fmt.Sprintf("%d: no instance of %s %s", codeUnavailable, cfg.Algorithm, cfg.Version)
	case err != nil:
		c.CandidateError = fmt.Sprintf("%d: %v", codeDeadline, err)
	default:
		if c.CandidateError, _ = answerError(reply); c.CandidateError == "" {
			if got, err = ReplyOutput(ctx, js, reply, cfg.MaxOutputBytes); err != nil {
				c.NotCompared = "candidate output: " + err.Error()
			}
		}
	}
	// A recorded output by reference may be gone (the outputs bucket
	// keeps objects for its TTL, HISTORY its records longer): no verdict.
	want, err := storedOutput(ctx, js, r.Output, r.recordedRef(), cfg.MaxOutputBytes)
	if err != nil {
		c.NotCompared = "recorded output: " + err.Error()
	}
	if c.StableError != "" || c.CandidateError != "" {
		c.NotCompared = "" // the error codes decide, outputs are not needed
	}
	if c.NotCompared == "" {
		c.Decide(want, got, cfg.Compare)
	}
	c.At = time.Now().UTC()
	return c
}
