package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/image/draw"

	imagethumbnail "pnpworker/algo/image_thumbnail"
	memeclassifier "pnpworker/algo/meme_classifier"
	"pnpworker/controller"
	"pnpworker/internal/natstest"
	"pnpworker/runner"
)

// bigMeme writes a PNG of over minBytes to dir: the drake_pref demo sample
// enlarged to side×side with a little noise, so that it does not compress.
// It returns the path and the decoded picture.
func bigMeme(t *testing.T, dir string, side, minBytes int) (string, image.Image) {
	t.Helper()
	f, err := memeclassifier.DemoSamples().Open("drake_pref_captioned.jpg")
	if err != nil {
		t.Fatal(err)
	}
	src, _, err := image.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := image.NewNRGBA(image.Rect(0, 0, side, side))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range dst.Pix {
		if i%4 != 3 {
			dst.Pix[i] = uint8(min(255, max(0, int(dst.Pix[i])+int(r.IntN(9))-4)))
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, dst); err != nil {
		t.Fatal(err)
	}
	if buf.Len() < minBytes {
		t.Fatalf("test image of %d bytes, want at least %d", buf.Len(), minBytes)
	}
	path := filepath.Join(dir, "drake_big.png")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, dst
}

// Data by reference end to end, with the commands a user types: a 5 MB
// image, larger than a message, is uploaded with pnp put and classified
// through its obj:// reference by a runner without any fetch allowlist,
// by request and as a job; an object over the fetch limit fails its job
// with 413; a thumbnail too large for a message is stored by reference and
// pnp result -o fetches it back byte for byte.
func TestObjectRefsEndToEnd(t *testing.T) {
	isolateEnv(t)
	srv := natstest.Start(t)
	url := srv.URL()
	nc := srv.Connect()
	if code, out, errOut := runPnp(t, "provision", "--server", url); code != 0 {
		t.Fatalf("pnp provision: exit %d\n%s%s", code, out, errOut)
	}
	startPnp(t, "runner", "--server", url, "--algorithms", "meme_classifier,image_thumbnail", "--log-level", "warn")
	startPnp(t, "controller", "--server", url, "--log-level", "warn")
	natstest.Eventually(t, 30*time.Second, func() bool { return len(listKeys(t, url)) == 2 }, "runner not registered")

	dir := t.TempDir()
	path, pic := bigMeme(t, dir, 1400, 5<<20)
	if fi, _ := os.Stat(path); fi.Size() <= nc.MaxPayload() {
		t.Fatalf("image of %d bytes fits a message", fi.Size())
	}
	code, out, errOut := runPnp(t, "put", "--server", url, path)
	ref := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(ref, "obj://inputs/") || !strings.HasSuffix(ref, "/drake_big.png") {
		t.Fatalf("pnp put: exit %d, stdout %q\n%s", code, out, errOut)
	}

	// Request-reply.
	in := fmt.Sprintf(`{"image_url":%q}`, ref)
	reply, err := nc.Request("run.meme_classifier", []byte(in), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var cls struct{ Label string }
	if rerr := runner.ReplyError(reply); rerr != nil || json.Unmarshal(reply.Data, &cls) != nil || cls.Label != "drake_pref" {
		t.Fatalf("run.meme_classifier on %s: error %v, reply %s; want label drake_pref", ref, rerr, reply.Data)
	}

	// A job.
	code, out, errOut = runPnp(t, "submit", "--server", url, "--wait", "meme_classifier", in)
	res := decodeResult(t, out)
	cls.Label = ""
	if code != 0 || res.Status != controller.StatusSucceeded || json.Unmarshal(res.Output, &cls) != nil || cls.Label != "drake_pref" {
		t.Fatalf("pnp submit --wait: exit %d\n%s%s", code, out, errOut)
	}

	// An object over the fetcher's 10 MiB limit: refused with 413, the
	// job failed for good.
	huge := filepath.Join(dir, "huge.bin")
	if err := os.WriteFile(huge, bytes.Repeat([]byte{1}, 12<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runPnp(t, "put", "--server", url, "--name", "huge.bin", huge)
	code, out, errOut = runPnp(t, "submit", "--server", url, "--wait", "meme_classifier", fmt.Sprintf(`{"image_url":%q}`, strings.TrimSpace(out)))
	if res := decodeResult(t, out); code != 1 || res.Error == nil || res.Error.Code != 413 || !strings.Contains(res.Error.Message, "the object is 12582912 bytes, over the limit") {
		t.Fatalf("job on a 12 MiB object: exit %d\n%s%s", code, out, errOut)
	}

	// A large output, stored by reference.
	code, out, errOut = runPnp(t, "submit", "--server", url, "--id", "thumb-1", "--wait", "image_thumbnail", fmt.Sprintf(`{"image_url":%q,"max_side":1400}`, ref))
	res = decodeResult(t, out)
	if code != 0 || res.Status != controller.StatusSucceeded || res.Output != nil || !strings.HasPrefix(res.OutputRef, "obj://outputs/image_thumbnail/") {
		t.Fatalf("thumbnail job: exit %d\n%s%s", code, out, errOut)
	}
	outFile := filepath.Join(dir, "thumb.json")
	if code, out, errOut := runPnp(t, "result", "--server", url, "thumb-1", "-o", outFile); code != 0 {
		t.Fatalf("pnp result -o: exit %d\n%s%s", code, out, errOut)
	}
	got, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	thumb, err := imagethumbnail.Thumbnail(pic, 1400)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(thumb)
	if !bytes.Equal(got, want) {
		t.Fatalf("pnp result -o wrote %d bytes; want the algorithm's output of %d bytes", len(got), len(want))
	}
	getFile := filepath.Join(dir, "thumb-get.json")
	if code, out, errOut := runPnp(t, "get", "--server", url, res.OutputRef, "-o", getFile); code != 0 {
		t.Fatalf("pnp get: exit %d\n%s%s", code, out, errOut)
	}
	if got2, _ := os.ReadFile(getFile); !bytes.Equal(got2, want) {
		t.Fatalf("pnp get wrote %d bytes; want %d", len(got2), len(want))
	}
}

// bannerCommands parses the commands the banner of pnp up prints.
func bannerCommands(t *testing.T, banner string) [][]string {
	t.Helper()
	var cmds [][]string
	for _, c := range bannerLines(banner) {
		cmds = append(cmds, c.args)
	}
	return cmds
}

// bannerLines parses the commands the banner of pnp up prints: every line
// that starts with nats, or with pnp or go run ./cmd/pnp and a pnp
// command, split into words as a shell would, its trailing comment
// dropped.
func bannerLines(banner string) []shownCommand {
	names := map[string]bool{}
	for _, c := range commands() {
		names[c.name] = true
	}
	var cmds []shownCommand
	for _, line := range strings.Split(banner, "\n") {
		line = strings.TrimSpace(line)
		for _, args := range splitCommands(line) {
			if pargs, ok := pnpArgs(args); (ok && len(pargs) > 0 && names[pargs[0]]) || (len(args) > 1 && args[0] == "nats") {
				cmds = append(cmds, shownCommand{where: "banner", line: line, args: args})
			}
		}
	}
	return cmds
}

// Every demo image of pnp up is in the inputs bucket, and a second runner
// started later, with no fetch allowlist, answers the banner's image
// requests as well as pnp up's own runner does: the README's scale-out.
func TestUpDemoImagesReachEveryRunner(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn")
	up.waitOutput(t, "Ctrl-C stops it.")
	banner := up.stdout.String()
	// The gateway's HTTP lines stay; no image is served over HTTP.
	if strings.Contains(banner, `"image_url":"http://127.0.0.1`) || strings.Contains(banner, "demo images also on") {
		t.Errorf("banner still points at a loopback web server:\n%s", banner)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ups := listKeys(t, url)
	startPnp(t, "runner", "--server", url, "--log-level", "warn")
	natstest.Eventually(t, 30*time.Second, func() bool { return len(listKeys(t, url)) == 2*len(ups) }, "second runner not registered")

	var requests [][]string
	for _, c := range bannerCommands(t, banner) {
		if n := len(c); n >= 3 && c[0] == "nats" && c[n-3] == "req" && strings.Contains(c[n-1], "obj://") {
			requests = append(requests, c)
		}
	}
	if len(requests) < 3 {
		t.Fatalf("banner has %d object requests, want at least 3:\n%s", len(requests), banner)
	}
	for _, c := range requests {
		subject, body := c[len(c)-2], c[len(c)-1]
		// A queue group spreads requests at random: ask until both runners
		// have answered, each time successfully.
		seen := map[string]bool{}
		for i := 0; len(seen) < 2; i++ {
			if i == 200 {
				t.Fatalf("%s %s: 200 requests reached only %v", subject, body, seen)
			}
			reply, err := nc.Request(subject, []byte(body), 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if rerr := runner.ReplyError(reply); rerr != nil {
				t.Fatalf("%s %s: %v (instance %s)", subject, body, rerr, reply.Header.Get(runner.HeaderInstance))
			}
			seen[reply.Header.Get(runner.HeaderInstance)] = true
		}
	}
}
