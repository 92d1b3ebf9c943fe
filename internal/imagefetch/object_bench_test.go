package imagefetch

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/pnpworker/pnpworker/internal/objref"
)

// BenchmarkFetchObject measures object reads through a Fetcher: a 5 MB
// image read whole, a 200 MB object refused from its metadata under the
// default 10 MiB limit, and, for comparison, the same 200 MB object read
// whole without a limit — what the refusal saves.
//
//	go test -run '^$' -bench FetchObject -benchtime 5x ./internal/imagefetch/
func BenchmarkFetchObject(b *testing.B) {
	js, _ := objectStore(b)
	ctx := context.Background()
	small := noisePNG(b, 1200, 1100)
	if _, err := objref.Put(ctx, js, objref.InputsBucket, "small.png", bytes.NewReader(small)); err != nil {
		b.Fatal(err)
	}
	const hugeSize = 200 << 20
	if _, err := objref.Put(ctx, js, objref.InputsBucket, "huge.bin", bytes.NewReader(make([]byte, hugeSize))); err != nil {
		b.Fatal(err)
	}
	f, err := New(Config{Objects: js})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("read_5MB", func(b *testing.B) {
		b.SetBytes(int64(len(small)))
		for b.Loop() {
			if _, _, err := f.Get(ctx, "obj://inputs/small.png"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("refuse_200MB", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := f.Get(ctx, "obj://inputs/huge.bin"); !errors.Is(err, ErrTooLarge) {
				b.Fatalf("got %v, want ErrTooLarge", err)
			}
		}
	})
	b.Run("read_200MB_whole", func(b *testing.B) {
		b.SetBytes(hugeSize)
		for b.Loop() {
			if _, err := objref.Read(ctx, js, objref.Ref{Bucket: objref.InputsBucket, Name: "huge.bin"}, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
