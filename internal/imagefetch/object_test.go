package imagefetch

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/protocol"
)

// noisePNG is a w×h PNG of random pixels: it does not compress, so its
// size is about 4·w·h bytes.
func noisePNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Uint32())
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// objectStore starts NATS and returns a JetStream with the inputs bucket
// and a second bucket, other.
func objectStore(t testing.TB) (jetstream.JetStream, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, b := range []string{objref.InputsBucket, "other"} {
		if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}
	return js, srv
}

func TestFetchObjectBiggerThanAMessage(t *testing.T) {
	js, srv := objectStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	data := noisePNG(t, 1200, 1100) // ~5 MB
	if mp := srv.Connect().MaxPayload(); int64(len(data)) <= mp {
		t.Fatalf("test image of %d bytes fits a message (max payload %d)", len(data), mp)
	}
	ref, err := objref.Put(ctx, js, objref.InputsBucket, "big/noise.png", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// No Allow list: object references open no socket.
	f, err := New(Config{Objects: js})
	if err != nil {
		t.Fatal(err)
	}
	img, err := f.Fetch(ctx, ref.String())
	if err != nil {
		t.Fatalf("Fetch(%s): %v", ref, err)
	}
	defer img.Release()
	if b := img.Image.Bounds(); b.Dx() != 1200 || b.Dy() != 1100 || img.URL != ref.String() {
		t.Fatalf("got %v from %s", b, img.URL)
	}
}

func TestFetchObjectRefusals(t *testing.T) {
	js, _ := objectStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	big := bytes.Repeat([]byte{0xff}, 8<<20)
	if _, err := objref.Put(ctx, js, objref.InputsBucket, "big.bin", bytes.NewReader(big)); err != nil {
		t.Fatal(err)
	}
	if _, err := objref.Put(ctx, js, "other", "x.png", bytes.NewReader(pngBytes(t, 4, 4))); err != nil {
		t.Fatal(err)
	}
	withJS, _ := New(Config{Objects: js, MaxBytes: 64 << 10})
	noJS, _ := New(Config{})
	cases := []struct {
		name    string
		f       *Fetcher
		url     string
		code    int
		kind    error
		message string
	}{
		{"no connection", noJS, "obj://inputs/big.bin", protocol.CodeInvalidInput, ErrInvalidURL, "does not read obj://"},
		{"bucket not allowed", withJS, "obj://other/x.png", protocol.CodeUnprocessable, ErrBlocked, `bucket "other" may not be read`},
		{"missing object", withJS, "obj://inputs/nope.png", protocol.CodeUnprocessable, ErrUnreachable, "no object"},
		{"malformed", withJS, "obj://inputs/", protocol.CodeInvalidInput, ErrInvalidURL, "no object name"},
		// Refused from the object's metadata: the message states its size,
		// which only the metadata knows when nothing past the limit is read.
		{"over the size limit", withJS, "obj://inputs/big.bin", protocol.CodeTooLarge, ErrTooLarge, "is 8388608 bytes, over the limit of 65536"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.f.Fetch(ctx, tc.url)
			var re *protocol.Error
			if !errors.As(err, &re) || re.Code != tc.code || !errors.Is(err, tc.kind) || !strings.Contains(re.Message, tc.message) {
				t.Fatalf("Fetch(%s) = %v; want %d %v containing %q", tc.url, err, tc.code, tc.kind, tc.message)
			}
		})
	}
	// A redirect into the object store is never followed.
	if _, err := withJS.checkURL(mustParse(t, "obj://inputs/big.bin")); !errors.Is(err, ErrInvalidURL) {
		t.Fatalf("redirect to obj://: %v", err)
	}
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestObjectBucketAllowListMatchesWholeNames pins that Config.Buckets
// names buckets whole: with "inputs" allowed, a bucket whose name only
// starts (or ends) like it, or differs in case, is refused as not allowed
// (422) although it exists and holds the object, so a matching by prefix
// cannot pass it. The default list is inputs and uploads, nothing more.
func TestObjectBucketAllowListMatchesWholeNames(t *testing.T) {
	js, _ := objectStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	img := pngBytes(t, 4, 4)
	buckets := []string{objref.InputsBucket, objref.UploadsBucket, objref.OutputsBucket, "inputs_private", "inputs-x", "inputsx", "inpu", "INPUTS", "my_inputs", "uploads_private", objref.OutputsBucketFor("image_info")}
	for _, b := range buckets {
		if b != objref.InputsBucket {
			if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: b}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := objref.Put(ctx, js, b, "x.png", bytes.NewReader(img)); err != nil {
			t.Fatal(err)
		}
	}
	onlyInputs, err := New(Config{Objects: js, Buckets: []string{objref.InputsBucket}})
	if err != nil {
		t.Fatal(err)
	}
	defaults, err := New(Config{Objects: js})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		f       *Fetcher
		bucket  string
		allowed bool
	}{
		{"inputs allowed", onlyInputs, "inputs", true},
		{"a longer name starting with it", onlyInputs, "inputs_private", false},
		{"a hyphenated name starting with it", onlyInputs, "inputs-x", false},
		{"a name it is the prefix of", onlyInputs, "inputsx", false},
		{"a prefix of it", onlyInputs, "inpu", false},
		{"another case", onlyInputs, "INPUTS", false},
		{"a name ending with it", onlyInputs, "my_inputs", false},
		{"uploads not listed", onlyInputs, "uploads", false},
		{"default: inputs", defaults, "inputs", true},
		{"default: uploads", defaults, "uploads", true},
		{"default: a name starting with uploads", defaults, "uploads_private", false},
		{"default: the controller's outputs", defaults, "outputs", false},
		{"default: an algorithm's outputs", defaults, objref.OutputsBucketFor("image_info"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := objref.Ref{Bucket: tc.bucket, Name: "x.png"}.String()
			got, err := tc.f.Fetch(ctx, u)
			if tc.allowed {
				if err != nil {
					t.Fatalf("Fetch(%s): %v", u, err)
				}
				got.Release()
				return
			}
			var re *protocol.Error
			if err == nil {
				got.Release()
			}
			if !errors.As(err, &re) || re.Code != protocol.CodeUnprocessable || !errors.Is(err, ErrBlocked) || !strings.Contains(re.Message, `bucket "`+tc.bucket+`" may not be read`) {
				t.Fatalf("Fetch(%s) = %v; want 422 ErrBlocked naming the bucket", u, err)
			}
		})
	}
}
