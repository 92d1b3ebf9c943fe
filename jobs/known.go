package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
)

// An algorithm is known when a runner serves it now, a runner registered
// for it before (a controller marked it in ServedBucket), or an operator
// declared it (Declare, a mark in the same bucket): jobs for it may wait
// for a runner. Any other name is most likely a typo, and a job for it
// would wait in JOBS until it expires.

// ErrUnknownAlgorithm is wrapped by the error of CheckKnown, and of Submit
// with SubmitOptions.RequireKnown, for an algorithm no runner has ever
// registered for and nobody declared: an *UnknownAlgorithmError.
var ErrUnknownAlgorithm = errors.New("unknown algorithm")

// UnknownAlgorithmError names an unknown algorithm and the known names
// closest to it.
type UnknownAlgorithmError struct {
	Name string
	// Suggestions are known names within a small edit distance of Name,
	// closest first; empty when none is close.
	Suggestions []string
}

func (e *UnknownAlgorithmError) Error() string {
	msg := fmt.Sprintf("%s %q: no runner has ever registered for it and it was not declared ('pnp algorithms declare %s' accepts its jobs before its runners start)", ErrUnknownAlgorithm, e.Name, e.Name)
	if len(e.Suggestions) > 0 {
		msg += "; did you mean " + strings.Join(e.Suggestions, " or ") + "?"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrUnknownAlgorithm) true.
func (e *UnknownAlgorithmError) Unwrap() error { return ErrUnknownAlgorithm }

// Declare marks algorithm as known, so that its jobs are accepted (and
// wait for a runner, for up to the controller's maximum job age) before
// any of its runners has started: scale from zero. The mark is a key of
// ServedBucket, kept until that bucket's size limit pushes the oldest
// marks out.
func (s *Store) Declare(ctx context.Context, algorithm string) error {
	if !discovery.ValidAlgorithmName(algorithm) {
		return fmt.Errorf("jobs: declare: invalid algorithm name %q (lower case letters, digits and '_', starting with a letter, at most 64 characters)", truncate(algorithm, 100))
	}
	kv, err := s.servedBucket(ctx)
	if err != nil {
		return fmt.Errorf("jobs: declare %s: %w", algorithm, err)
	}
	at, _ := time.Now().UTC().MarshalText()
	if _, err := kv.Put(ctx, algorithm, append([]byte("declared "), at...)); err != nil {
		return fmt.Errorf("jobs: declare %s: %w", algorithm, err)
	}
	return nil
}

// servedBucket returns the served bucket, binding it when s has not yet.
func (s *Store) servedBucket(ctx context.Context) (jetstream.KeyValue, error) {
	if s.served != nil {
		return s.served, nil
	}
	return s.js.KeyValue(ctx, ServedBucket)
}

// KnownAlgorithms lists the known algorithms, sorted: the live ones and
// the marks of ServedBucket. It needs stream info on the discovery and
// served buckets only.
func (s *Store) KnownAlgorithms(ctx context.Context) ([]string, error) {
	var names []string
	for _, b := range []struct{ stream, prefix string }{
		{"KV_" + s.registry.KeyValue().Bucket(), "$KV." + s.registry.KeyValue().Bucket() + "."},
		{"KV_" + ServedBucket, "$KV." + ServedBucket + "."},
	} {
		str, err := s.js.Stream(ctx, b.stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("jobs: known algorithms: %w", err)
		}
		info, err := str.Info(ctx, jetstream.WithSubjectFilter(b.prefix+">"))
		if err != nil {
			return nil, fmt.Errorf("jobs: known algorithms: %w", err)
		}
		for subj := range info.State.Subjects {
			alg, _, _ := strings.Cut(strings.TrimPrefix(subj, b.prefix), ".")
			if discovery.ValidAlgorithmName(alg) {
				names = append(names, alg)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// CheckKnown returns nil when algorithm is known, else an
// *UnknownAlgorithmError with the closest known names. When the served
// bucket does not exist (a deployment provisioned before it), every name
// counts as known: a job is never refused by mistake.
func (s *Store) CheckKnown(ctx context.Context, algorithm string) error {
	if n, err := s.RegisteredRunners(ctx, algorithm); err != nil {
		return err
	} else if n > 0 {
		return nil
	}
	kv, err := s.servedBucket(ctx)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("jobs: check algorithm %s: %w", algorithm, err)
	}
	switch _, err := kv.Get(ctx, algorithm); {
	case err == nil:
		return nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("jobs: check algorithm %s: %w", algorithm, err)
	}
	known, err := s.KnownAlgorithms(ctx)
	if err != nil {
		return err
	}
	return &UnknownAlgorithmError{Name: algorithm, Suggestions: Closest(algorithm, known)}
}

// Closest returns the names of known within a small edit distance of
// name (a third of its length, at least 1 and at most 3; ignoring '_'
// and case counts as distance 0 first), closest first, at most three.
func Closest(name string, known []string) []string {
	type cand struct {
		name string
		d    int
	}
	limit := min(max(len(name)/3, 1), 3)
	squash := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	var cs []cand
	for _, k := range known {
		if k == name {
			continue
		}
		d := editDistance(name, k)
		if squash(k) == squash(name) {
			d = 0
		}
		if d <= limit {
			cs = append(cs, cand{k, d})
		}
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return a.d - b.d })
	out := make([]string, 0, min(len(cs), 3))
	for _, c := range cs[:min(len(cs), 3)] {
		out = append(out, c.name)
	}
	return out
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
