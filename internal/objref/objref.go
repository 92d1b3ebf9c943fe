// Package objref names objects in the JetStream Object Store with URLs and
// reads and writes them under a size limit. It is the one definition of the
// reference form every part of pnpworker shares:
//
//	obj://<bucket>/<name>
//
// The bucket is the URL's host: a JetStream object store bucket name, only
// letters, digits, '-' and '_' (at most 72), so it never contains '/'. Everything after
// the '/' that ends the bucket is the object's name, percent-decoded, and
// may itself contain '/' ("obj://inputs/2026/11/cat.png" names the object
// "2026/11/cat.png" in bucket "inputs"). A name with characters a URL path
// cannot carry ('%', '?', '#', spaces, non-ASCII) is percent-encoded by
// Ref.String; Parse decodes it. A reference has no user, port, query or
// fragment.
package objref

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Scheme is the URL scheme of an object reference.
const Scheme = "obj"

// Prefix starts every object reference.
const Prefix = Scheme + "://"

// The project's buckets. Each has one writer, so that a message with
// "Nats-Rollup: all" — which empties a whole bucket, and which permissions
// cannot refuse (they match subjects, not headers) — can only ever empty
// what its writer wrote itself: producers write InputsBucket, the HTTP
// gateway UploadsBucket, the controller OutputsBucket, and the runners of
// an algorithm OutputsBucketFor(algorithm).
const (
	// InputsBucket holds data producers upload for jobs and requests
	// (pnp put, nats object put inputs).
	InputsBucket = "inputs"
	// UploadsBucket holds data uploaded through the HTTP gateway.
	UploadsBucket = "uploads"
	// OutputsBucket holds outputs too large for a result record, stored by
	// the controller.
	OutputsBucket = "outputs"
)

// OutputsBucketFor is the bucket the runners of algorithm store outputs
// too large for a message in: "outputs_<algorithm>".
func OutputsBucketFor(algorithm string) string { return OutputsBucket + "_" + algorithm }

// Default limits of an algorithm's outputs bucket (OutputsConfig).
const (
	// DefaultOutputsTTL is how long an output is kept: as long as the
	// result records that refer to it by default.
	DefaultOutputsTTL = 24 * time.Hour
	// DefaultAlgorithmOutputsMaxBytes caps one algorithm's outputs bucket.
	DefaultAlgorithmOutputsMaxBytes = 64 << 20
)

// OutputsConfig is the configuration of algorithm's outputs bucket, with
// DefaultOutputsTTL for a ttl of 0, DefaultAlgorithmOutputsMaxBytes for a
// maxBytes of 0 and 1 for replicas 0.
func OutputsConfig(algorithm string, ttl time.Duration, maxBytes int64, replicas int) jetstream.ObjectStoreConfig {
	if ttl == 0 {
		ttl = DefaultOutputsTTL
	}
	if maxBytes == 0 {
		maxBytes = DefaultAlgorithmOutputsMaxBytes
	}
	if replicas == 0 {
		replicas = 1
	}
	return jetstream.ObjectStoreConfig{
		Bucket:      OutputsBucketFor(algorithm),
		Description: "pnpworker: outputs of " + algorithm + " too large for a message, written by its runners only",
		TTL:         ttl,
		MaxBytes:    maxBytes,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// EnsureBucket creates the object store bucket cfg describes unless it
// exists already; an existing bucket keeps its own settings (those of
// pnp provision).
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig) error {
	_, err := js.ObjectStore(ctx, cfg.Bucket)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("objref: bucket %s: %w", cfg.Bucket, err)
	}
	if _, err := js.CreateObjectStore(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("objref: create bucket %s: %w", cfg.Bucket, err)
	}
	return nil
}

// algorithmName is discovery's rule for an algorithm name
// (discovery.ValidAlgorithmName), which this package sits below.
var algorithmName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// IsOutputsBucket reports whether b is OutputsBucket or the outputs
// bucket of an algorithm (OutputsBucketFor), compared whole, never by
// prefix alone.
func IsOutputsBucket(b string) bool {
	if b == OutputsBucket {
		return true
	}
	alg, ok := strings.CutPrefix(b, OutputsBucket+"_")
	return ok && algorithmName.MatchString(alg)
}

// MaxNameLen bounds an object name.
const MaxNameLen = 1024

// Sentinels for errors.Is.
var (
	// ErrInvalid marks a string that is not a valid object reference.
	ErrInvalid = errors.New("invalid object reference")
	// ErrNotFound marks a missing bucket or object.
	ErrNotFound = errors.New("object not found")
	// ErrTooLarge marks an object over the caller's size limit; Read
	// returns it from the object's metadata, before reading any data.
	ErrTooLarge = errors.New("object too large")
)

// Ref is a parsed object reference. The zero value is not valid.
type Ref struct {
	Bucket string
	Name   string
}

// MaxBucketLen bounds a bucket name: long enough for OutputsBucketFor of
// the longest algorithm name (64 characters).
const MaxBucketLen = 72

var bucketRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,72}$`)

// ValidBucket reports whether b is a valid object store bucket name.
func ValidBucket(b string) bool { return bucketRE.MatchString(b) }

// Is reports whether s has the obj:// scheme (case-insensitive), that is,
// whether it is meant as an object reference, valid or not.
func Is(s string) bool {
	return len(s) >= len(Prefix) && strings.EqualFold(s[:len(Prefix)], Prefix)
}

// Parse parses an obj:// reference. Errors wrap ErrInvalid.
func Parse(s string) (Ref, error) {
	if !Is(s) {
		return Ref{}, fmt.Errorf("%w: %q does not start with %s", ErrInvalid, s, Prefix)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	switch {
	case u.User != nil:
		return Ref{}, fmt.Errorf("%w: credentials are not allowed", ErrInvalid)
	case u.Port() != "" || strings.HasSuffix(u.Host, ":"):
		return Ref{}, fmt.Errorf("%w: a bucket has no port", ErrInvalid)
	case u.RawQuery != "" || u.ForceQuery:
		return Ref{}, fmt.Errorf("%w: a query is not allowed (percent-encode '?' in a name as %%3F)", ErrInvalid)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return Ref{}, fmt.Errorf("%w: a fragment is not allowed (percent-encode '#' in a name as %%23)", ErrInvalid)
	}
	r := Ref{Bucket: u.Host, Name: strings.TrimPrefix(u.Path, "/")}
	return r, r.Validate()
}

// Validate reports whether r names a possible object.
func (r Ref) Validate() error {
	if !ValidBucket(r.Bucket) {
		return fmt.Errorf("%w: bucket %q: want 1 to 72 letters, digits, '-' or '_'", ErrInvalid, r.Bucket)
	}
	if r.Name == "" {
		return fmt.Errorf("%w: no object name after obj://%s/", ErrInvalid, r.Bucket)
	}
	if len(r.Name) > MaxNameLen {
		return fmt.Errorf("%w: object name of %d bytes, over %d", ErrInvalid, len(r.Name), MaxNameLen)
	}
	for _, c := range r.Name {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: control character in the object name", ErrInvalid)
		}
	}
	return nil
}

// String formats r as obj://<bucket>/<name>, percent-encoding what a URL
// path cannot carry and keeping the name's '/' as they are, so that
// Parse(r.String()) == r.
func (r Ref) String() string {
	segs := strings.Split(r.Name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return Prefix + r.Bucket + "/" + strings.Join(segs, "/")
}

// Read returns the object r names from js, refusing one over maxBytes
// from its metadata before reading anything (ErrTooLarge), and stopping
// at maxBytes+1 bytes should the object be longer than its metadata said.
// maxBytes <= 0 means no limit. A missing bucket or object wraps
// ErrNotFound. It reads as Open does, creating no consumer.
func Read(ctx context.Context, js jetstream.JetStream, r Ref, maxBytes int64) ([]byte, error) {
	obj, err := Open(ctx, js, r)
	if err != nil {
		return nil, err
	}
	if maxBytes > 0 && obj.Size() > maxBytes {
		return nil, &SizeError{Ref: r, Size: obj.Size(), Limit: maxBytes}
	}
	var src io.Reader = obj
	if maxBytes > 0 {
		src = io.LimitReader(obj, maxBytes+1)
	}
	data, err := io.ReadAll(src)
	if err != nil {
		return nil, fmt.Errorf("objref: %s: read: %w", r, err)
	}
	if maxBytes > 0 && int64(len(data)) > maxBytes {
		return nil, &SizeError{Ref: r, Size: -1, Limit: maxBytes}
	}
	return data, nil
}

// Object is an object being read, chunk by chunk, with one direct get per
// chunk. It creates no consumer: a role allowed to read a bucket needs
// only $JS.API.STREAM.INFO.OBJ_<bucket> and
// $JS.API.DIRECT.GET.OBJ_<bucket>[.>], never the right to create
// consumers, whose deliver subject the server does not check against the
// creator's permissions. An Object is not safe for concurrent use.
type Object struct {
	ctx    context.Context
	ref    Ref
	stream jetstream.Stream
	subj   string
	info   *jetstream.ObjectInfo
	next   uint64 // stream sequence to look for the next chunk from
	chunks uint32 // chunks read
	read   uint64 // bytes read
	buf    []byte
	digest hash.Hash
	err    error
}

// Open looks up the object r names in js and returns a reader of its
// content, checked against the object's size and SHA-256 digest when the
// last byte is read. A missing bucket or object wraps ErrNotFound; links
// are refused.
func Open(ctx context.Context, js jetstream.JetStream, r Ref) (*Object, error) {
	store, err := js.ObjectStore(ctx, r.Bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("objref: bucket %s: %w", r.Bucket, ErrNotFound)
		}
		return nil, fmt.Errorf("objref: bucket %s: %w", r.Bucket, err)
	}
	info, err := store.GetInfo(ctx, r.Name)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("objref: %s: %w", r, ErrNotFound)
		}
		return nil, fmt.Errorf("objref: %s: info: %w", r, err)
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, fmt.Errorf("objref: %s: a link, not an object", r)
	}
	if info.NUID == "" {
		return nil, fmt.Errorf("objref: %s: %w", r, jetstream.ErrBadObjectMeta)
	}
	stream, err := js.Stream(ctx, "OBJ_"+r.Bucket)
	if err != nil {
		return nil, fmt.Errorf("objref: bucket %s: %w", r.Bucket, err)
	}
	return &Object{
		ctx: ctx, ref: r, stream: stream, info: info, next: 1, digest: sha256.New(),
		subj: "$O." + r.Bucket + ".C." + info.NUID,
	}, nil
}

// Size is the object's size from its metadata.
func (o *Object) Size() int64 { return int64(o.info.Size) }

// Read implements io.Reader.
func (o *Object) Read(p []byte) (int, error) {
	for len(o.buf) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		o.err = o.fetch()
	}
	n := copy(p, o.buf)
	o.buf = o.buf[n:]
	return n, nil
}

// fetch reads the next chunk into o.buf, or returns io.EOF once the
// object is read whole. The last chunk is checked against the object's
// size and digest before any of it is handed out, so a reader of a
// corrupt object never gets all of its bytes: a copy to an HTTP response
// with the object's Content-Length ends short.
func (o *Object) fetch() error {
	if o.chunks == o.info.Chunks {
		if err := o.verify(); err != nil {
			return err
		}
		return io.EOF
	}
	m, err := o.stream.GetMsg(o.ctx, o.next, jetstream.WithGetMsgSubject(o.subj))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("objref: %s: chunk %d of %d: %w", o.ref, o.chunks+1, o.info.Chunks, ErrNotFound)
		}
		return fmt.Errorf("objref: %s: chunk %d of %d: %w", o.ref, o.chunks+1, o.info.Chunks, err)
	}
	o.chunks++
	o.next = m.Sequence + 1
	o.read += uint64(len(m.Data))
	if o.read > o.info.Size {
		return fmt.Errorf("objref: %s: longer than the %d bytes its metadata says", o.ref, o.info.Size)
	}
	o.digest.Write(m.Data)
	if o.chunks == o.info.Chunks {
		if err := o.verify(); err != nil {
			return err
		}
	}
	o.buf = m.Data
	return nil
}

// verify checks what was read, once every chunk was, against the
// object's size and digest.
func (o *Object) verify() error {
	if o.read != o.info.Size {
		return fmt.Errorf("objref: %s: %d bytes read, metadata says %d", o.ref, o.read, o.info.Size)
	}
	if want, err := jetstream.DecodeObjectDigest(o.info.Digest); err == nil && o.info.Size > 0 && !bytes.Equal(o.digest.Sum(nil), want) {
		return fmt.Errorf("objref: %s: content does not match its digest", o.ref)
	}
	return nil
}

// SizeError is the error of an object over a size limit; it matches
// ErrTooLarge with errors.Is.
type SizeError struct {
	Ref Ref
	// Size is the object's size from its metadata, or -1 when it was
	// found too large only while reading.
	Size  int64
	Limit int64
}

func (e *SizeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("objref: %s: over the limit of %d bytes", e.Ref, e.Limit)
	}
	return fmt.Sprintf("objref: %s: %d bytes, over the limit of %d", e.Ref, e.Size, e.Limit)
}

// Is makes a SizeError match ErrTooLarge.
func (e *SizeError) Is(target error) bool { return target == ErrTooLarge }

// Put stores data as object name in bucket and returns its reference.
func Put(ctx context.Context, js jetstream.JetStream, bucket, name string, data io.Reader) (Ref, error) {
	r := Ref{Bucket: bucket, Name: name}
	if err := r.Validate(); err != nil {
		return Ref{}, fmt.Errorf("objref: put: %w", err)
	}
	store, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return Ref{}, fmt.Errorf("objref: bucket %s: %w", bucket, ErrNotFound)
		}
		return Ref{}, fmt.Errorf("objref: bucket %s: %w", bucket, err)
	}
	// The object store makes one chunk of each Read: a reader that
	// returns a few KiB at a time (an HTTP body) would make many small
	// chunks, and a bucket's per-object limit counts chunks.
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, fullReader{data}); err != nil {
		err = limitError(ctx, js, bucket, err)
		if errors.Is(err, ErrBucketLimit) {
			// The object store publishes the object's metadata before it
			// learns that a chunk was refused, and leaves it behind,
			// naming chunks it has purged: delete it, so the name reads
			// as absent rather than as a broken object.
			_ = store.Delete(ctx, name)
		}
		return Ref{}, fmt.Errorf("objref: put %s: %w", r, err)
	}
	return r, nil
}

// ErrBucketLimit is wrapped by Put's error when the bucket's limits refused
// the object: larger than one object may be, or the bucket full.
var ErrBucketLimit = errors.New("over the bucket's limit")

// limitError names the limit of bucket that refused a put (nothing of the
// object is kept: the object store removes the chunks it wrote); other
// errors pass unchanged.
func limitError(ctx context.Context, js jetstream.JetStream, bucket string, err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || !strings.HasPrefix(apiErr.Description, "maximum ") && !strings.Contains(apiErr.Description, "message size exceeds") {
		return err
	}
	var cfg jetstream.StreamConfig
	if st, serr := js.Stream(ctx, "OBJ_"+bucket); serr == nil {
		cfg = st.CachedInfo().Config
	}
	switch {
	case strings.Contains(apiErr.Description, "per subject"):
		return fmt.Errorf("%w: the object is larger than one object of bucket %s may be (%d chunks; %d bytes with the object store's default chunks of 128 KiB); nothing was kept: %w",
			ErrBucketLimit, bucket, cfg.MaxMsgsPerSubject, cfg.MaxMsgsPerSubject<<17, err)
	case strings.Contains(apiErr.Description, "message size"):
		return fmt.Errorf("%w: bucket %s takes chunks of at most %d bytes (the object store default is 128 KiB); nothing was kept: %w", ErrBucketLimit, bucket, cfg.MaxMsgSize, err)
	default:
		return fmt.Errorf("%w: bucket %s is full (%d bytes; objects are removed %s after they are put); nothing was kept: %w", ErrBucketLimit, bucket, cfg.MaxBytes, cfg.MaxAge, err)
	}
}

// fullReader fills each buffer it is given unless the data ends first
// (io.ReadFull), so that every chunk but the last is whole.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}
