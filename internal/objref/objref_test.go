package objref_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
)

func TestParseAndString(t *testing.T) {
	ok := []struct {
		name, in string
		want     objref.Ref
	}{
		{"plain", "obj://inputs/cat.png", objref.Ref{Bucket: "inputs", Name: "cat.png"}},
		{"slashes in name", "obj://inputs/2026/11/cat.png", objref.Ref{Bucket: "inputs", Name: "2026/11/cat.png"}},
		{"escaped chars", "obj://inputs/a%20b%3Fc%23d%25.png", objref.Ref{Bucket: "inputs", Name: "a b?c#d%.png"}},
		{"upper-case scheme", "OBJ://outputs/x", objref.Ref{Bucket: "outputs", Name: "x"}},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			got, err := objref.Parse(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			back, err := objref.Parse(got.String())
			if err != nil || back != got {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", got.String(), back, err, got)
			}
		})
	}
	bad := []struct{ name, in string }{
		{"http", "http://inputs/x"},
		{"no name", "obj://inputs/"},
		{"no bucket", "obj:///x"},
		{"bucket with dot", "obj://in.puts/x"},
		{"port", "obj://inputs:80/x"},
		{"user", "obj://u@inputs/x"},
		{"query", "obj://inputs/x?y"},
		{"fragment", "obj://inputs/x#y"},
		{"control char", "obj://inputs/a%0Ab"},
		{"bucket over 72 characters", "obj://" + strings.Repeat("b", 73) + "/x"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := objref.Parse(tc.in); !errors.Is(err, objref.ErrInvalid) {
				t.Fatalf("Parse(%q) = %+v, %v; want ErrInvalid", tc.in, r, err)
			}
		})
	}
}

// TestOutputsBuckets pins which buckets count as outputs buckets: the
// controller's and one per algorithm, matched whole, never by prefix.
func TestOutputsBuckets(t *testing.T) {
	longest := strings.Repeat("a", 64)
	if b := objref.OutputsBucketFor(longest); !objref.ValidBucket(b) || !objref.IsOutputsBucket(b) {
		t.Fatalf("OutputsBucketFor(64-character algorithm) = %q: not a valid outputs bucket", b)
	}
	for _, tc := range []struct {
		name, bucket string
		want         bool
	}{
		{"the controller's", "outputs", true},
		{"an algorithm's", objref.OutputsBucketFor("image_thumbnail"), true},
		{"inputs", "inputs", false},
		{"uploads", "uploads", false},
		{"prefix without an algorithm", "outputs_", false},
		{"not an algorithm name", "outputs_Image-X", false},
		{"algorithm name too long", "outputs_" + strings.Repeat("a", 65), false},
		{"outputs as a prefix", "outputsx", false},
		{"outputs inside", "my_outputs_x", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := objref.IsOutputsBucket(tc.bucket); got != tc.want {
				t.Fatalf("IsOutputsBucket(%q) = %v, want %v", tc.bucket, got, tc.want)
			}
		})
	}
}

func TestReadLimits(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := jetstream.New(srv.Connect())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "inputs"}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, bigger than a message
	ref, err := objref.Put(ctx, js, "inputs", "dir/blob", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if ref.String() != "obj://inputs/dir/blob" {
		t.Fatalf("ref = %s", ref)
	}
	got, err := objref.Read(ctx, js, ref, int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Read at the limit: %d bytes, %v", len(got), err)
	}
	_, err = objref.Read(ctx, js, ref, int64(len(data))-1)
	var se *objref.SizeError
	if !errors.As(err, &se) || !errors.Is(err, objref.ErrTooLarge) || se.Size != int64(len(data)) {
		t.Fatalf("Read over the limit: %v; want a SizeError from the metadata (size %d)", err, len(data))
	}
	if _, err := objref.Read(ctx, js, objref.Ref{Bucket: "inputs", Name: "nope"}, 0); !errors.Is(err, objref.ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := objref.Read(ctx, js, objref.Ref{Bucket: "nobucket", Name: "x"}, 0); !errors.Is(err, objref.ErrNotFound) {
		t.Fatalf("missing bucket: %v", err)
	}
}

// A corrupt object (here: its first chunk replaced by one with a byte
// changed) fails with a digest error before its last chunk is handed
// out: a reader never gets every byte of it.
func TestCorruptObjectWithholdsItsLastChunk(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := jetstream.New(srv.Connect())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "inputs"}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 3<<13) // 384 KiB: 3 chunks of 128 KiB
	ref, err := objref.Put(ctx, js, "inputs", "blob", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := objref.Read(ctx, js, ref, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("intact object: %d bytes, %v", len(got), err)
	}
	stream, err := js.Stream(ctx, "OBJ_inputs")
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, 1)
	if err != nil || !strings.HasPrefix(first.Subject, "$O.inputs.C.") {
		t.Fatalf("first chunk: %v %+v", err, first)
	}
	if err := stream.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(first.Data)
	forged[0] ^= 1
	if _, err := js.Publish(ctx, first.Subject, forged); err != nil {
		t.Fatal(err)
	}
	o, err := objref.Open(ctx, js, ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	if err == nil || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("corrupt object: %d bytes, %v; want a digest error", len(got), err)
	}
	if len(got) > len(data)-len(first.Data) {
		t.Fatalf("corrupt object: %d of %d bytes handed out before the error; the last chunk must be withheld", len(got), len(data))
	}
}

// EnsureBucket creates a missing outputs bucket with OutputsConfig's
// defaults and leaves an existing one as it was provisioned.
func TestEnsureBucket(t *testing.T) {
	srv := natstest.Start(t)
	js, _ := jetstream.New(srv.Connect())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: objref.OutputsBucketFor("kept"), MaxBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, algorithm string
		maxBytes        int64
	}{
		{"missing: created with the defaults", "made", objref.DefaultAlgorithmOutputsMaxBytes},
		{"existing: kept as provisioned", "kept", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 { // idempotent
				if err := objref.EnsureBucket(ctx, js, objref.OutputsConfig(tc.algorithm, 0, 0, 0)); err != nil {
					t.Fatal(err)
				}
			}
			st, err := js.Stream(ctx, "OBJ_outputs_"+tc.algorithm)
			if err != nil {
				t.Fatal(err)
			}
			if c := st.CachedInfo().Config; c.MaxBytes != tc.maxBytes {
				t.Fatalf("max bytes %d, want %d", c.MaxBytes, tc.maxBytes)
			}
		})
	}
}
