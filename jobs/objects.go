package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/internal/objref"
)

// ErrNoObjectStore is wrapped by the errors of PutInput, SubmitFile and
// Output when the bucket they need does not exist (or this client may not
// see it): provision with this version (pnp provision).
var ErrNoObjectStore = errors.New("object store bucket not provisioned")

// PutInput uploads r to the inputs bucket, the producers' own, as object
// name and returns its obj:// reference, which runners read like a URL.
// name "" takes a new unique name.
func (s *Store) PutInput(ctx context.Context, name string, r io.Reader) (objref.Ref, error) {
	return s.put(ctx, InputsBucket, name, r)
}

// PutUpload is PutInput into the uploads bucket, the HTTP gateway's own:
// a producer, who may write inputs only, can then empty no upload it did
// not make, nor the gateway any producer's.
func (s *Store) PutUpload(ctx context.Context, name string, r io.Reader) (objref.Ref, error) {
	return s.put(ctx, UploadsBucket, name, r)
}

func (s *Store) put(ctx context.Context, bucket, name string, r io.Reader) (objref.Ref, error) {
	if name == "" {
		name = nuid.Next()
	}
	ref, err := objref.Put(ctx, s.js, bucket, name, r)
	if errors.Is(err, objref.ErrNotFound) {
		return objref.Ref{}, fmt.Errorf("jobs: %w: %w", ErrNoObjectStore, err)
	}
	if err != nil {
		return objref.Ref{}, fmt.Errorf("jobs: %w", err)
	}
	return ref, nil
}

// FileOptions are the optional parts of SubmitFile. The zero value puts the
// reference in field image_url of an otherwise empty input.
type FileOptions struct {
	// Field is the input field that takes the file's reference. Default
	// "image_url".
	Field string
	// Input holds the other fields of the job's input, a JSON object.
	// Default: none.
	Input json.RawMessage
	// Name is the object's name in the inputs bucket. Default: a new
	// unique name followed by "/" and the file's base name, so that two
	// uploads of one file name never replace each other.
	Name string
	// Submit are the job's options.
	Submit SubmitOptions
}

// SubmitFile uploads the file at path to the inputs bucket, then submits a
// job for algorithm whose input is opts.Input with opts.Field set to the
// file's obj:// reference. The upload is not removed when the submission
// fails; the bucket's TTL ends it.
func (s *Store) SubmitFile(ctx context.Context, algorithm, path string, opts FileOptions) (Submission, objref.Ref, error) {
	if opts.Field == "" {
		opts.Field = "image_url"
	}
	input := map[string]json.RawMessage{}
	if len(opts.Input) > 0 {
		if err := json.Unmarshal(opts.Input, &input); err != nil {
			return Submission{}, objref.Ref{}, fmt.Errorf("jobs: submit file: input is not a JSON object: %w", err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return Submission{}, objref.Ref{}, fmt.Errorf("jobs: submit file: %w", err)
	}
	defer f.Close()
	if opts.Name == "" {
		opts.Name = nuid.Next() + "/" + filepath.Base(path)
	}
	ref, err := s.PutInput(ctx, opts.Name, f)
	if err != nil {
		return Submission{}, objref.Ref{}, err
	}
	input[opts.Field], _ = json.Marshal(ref.String())
	body, err := json.Marshal(input)
	if err != nil {
		return Submission{}, ref, fmt.Errorf("jobs: submit file: %w", err)
	}
	sub, err := s.Submit(ctx, algorithm, body, opts.Submit)
	return sub, ref, err
}

// Output returns a succeeded record's output JSON: the record's own, or
// the object its output_ref names, read whole (at most maxBytes when
// maxBytes > 0).
func (s *Store) Output(ctx context.Context, r Result, maxBytes int64) ([]byte, error) {
	if r.OutputRef == "" {
		return r.Output, nil
	}
	ref, err := objref.Parse(r.OutputRef)
	if err != nil {
		return nil, fmt.Errorf("jobs: result %s: %w", r.JobID, err)
	}
	data, err := objref.Read(ctx, s.js, ref, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("jobs: result %s: output: %w", r.JobID, err)
	}
	return data, nil
}

// OpenObject opens the object r names for reading, from the job
// pipeline's buckets only — inputs, uploads, outputs and an algorithm's
// outputs bucket (objref.IsOutputsBucket) — and ErrNotReadable otherwise.
// The reader checks the object's size and digest as it reaches the end.
func (s *Store) OpenObject(ctx context.Context, r objref.Ref) (*objref.Object, error) {
	if r.Bucket != InputsBucket && r.Bucket != UploadsBucket && !objref.IsOutputsBucket(r.Bucket) {
		return nil, fmt.Errorf("jobs: %s: %w", r, ErrNotReadable)
	}
	o, err := objref.Open(ctx, s.js, r)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return o, nil
}

// ErrNotReadable is wrapped by OpenObject's error for a bucket other than
// inputs, uploads, outputs and outputs_<algorithm>.
var ErrNotReadable = errors.New("not a bucket of the job pipeline (inputs, uploads, outputs, outputs_<algorithm>)")
