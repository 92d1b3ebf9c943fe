package imagefetch_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/protocol"
)

// A Fetcher refuses addresses a server should not reach on a caller's
// behalf, with a 4xx the caller can act on, and accepts data: URLs.
func ExampleFetcher_Fetch() {
	f, err := imagefetch.New(imagefetch.Config{
		Allow: []string{"images.internal:8080"}, // an internal host the operator trusts
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	for _, url := range []string{
		"http://169.254.169.254/latest/meta-data/",
		"http://[::ffff:127.0.0.1]/",
		"file:///etc/passwd",
	} {
		_, err := f.Fetch(ctx, url)
		var re *protocol.Error
		errors.As(err, &re)
		fmt.Println(re.Code, re.Message)
	}

	// A 1×1 transparent GIF.
	img, err := f.Fetch(ctx, "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
	if err != nil {
		panic(err)
	}
	fmt.Println(img.Format, img.Width, img.Height, img.Bytes)
	// Output:
	// 422 image_url: blocked address: link-local (including cloud metadata) addresses may not be fetched
	// 422 image_url: blocked address: IPv4-mapped IPv6 addresses may not be fetched
	// 400 image_url: scheme "file" is not supported; use http, https, data: or obj://
	// gif 1 1 42
}
