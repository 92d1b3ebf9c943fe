package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	"image/png"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/image/draw"

	imagethumbnail "github.com/pnpworker/pnpworker/algo/image_thumbnail"
	memeclassifier "github.com/pnpworker/pnpworker/algo/meme_classifier"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
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
	if rerr := protocol.ReplyError(reply); rerr != nil || json.Unmarshal(reply.Data, &cls) != nil || cls.Label != "drake_pref" {
		t.Fatalf("run.meme_classifier on %s: error %v, reply %s; want label drake_pref", ref, rerr, reply.Data)
	}

	// A job.
	code, out, errOut = runPnp(t, "submit", "--server", url, "--wait", "meme_classifier", in)
	res := decodeResult(t, out)
	cls.Label = ""
	if code != 0 || res.Status != jobs.StatusSucceeded || json.Unmarshal(res.Output, &cls) != nil || cls.Label != "drake_pref" {
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
	if code != 0 || res.Status != jobs.StatusSucceeded || res.Output != nil || !strings.HasPrefix(res.OutputRef, "obj://outputs_image_thumbnail/") {
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
			if rerr := protocol.ReplyError(reply); rerr != nil {
				t.Fatalf("%s %s: %v (instance %s)", subject, body, rerr, reply.Header.Get(protocol.HeaderInstance))
			}
			seen[reply.Header.Get(protocol.HeaderInstance)] = true
		}
	}
}

// Files over HTTP, end to end through `pnp gateway`: a multipart run and a
// multipart job with a file bigger than a NATS message (uploaded to the
// inputs bucket, its reference put in image_url), the job's large output
// read back through /v1/jobs/{id}/output, and a plain upload and its
// download. Refusals: an upload over --http-max-upload (413), a bucket that
// is not the pipeline's (404), a form without its file (400), an output
// of a failed job (409).
func TestGatewayFilesEndToEnd(t *testing.T) {
	isolateEnv(t)
	srv := natstest.Start(t)
	url := srv.URL()
	if code, out, errOut := runPnp(t, "provision", "--server", url); code != 0 {
		t.Fatalf("pnp provision: exit %d\n%s%s", code, out, errOut)
	}
	startPnp(t, "runner", "--server", url, "--algorithms", "meme_classifier,image_thumbnail", "--log-level", "warn")
	startPnp(t, "controller", "--server", url, "--log-level", "warn")
	gw := startPnp(t, "gateway", "--server", url, "--http", "127.0.0.1:0", "--http-max-upload", "8MiB", "--log-level", "warn")
	gw.waitOutput(t, "gateway on http://")
	m := regexp.MustCompile(`gateway on (http://[0-9.:]+)/`).FindStringSubmatch(gw.stdout.String())
	if m == nil {
		t.Fatalf("no address in %q", gw.stdout.String())
	}
	base := m[1]
	natstest.Eventually(t, 30*time.Second, func() bool { return len(listKeys(t, url)) == 2 }, "runner not registered")

	dir := t.TempDir()
	path, pic := bigMeme(t, dir, 1400, 5<<20)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) <= srv.Connect().MaxPayload() {
		t.Fatalf("image of %d bytes fits a message", len(data))
	}
	form := func(fields map[string]string, file []byte) (io.Reader, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		for k, v := range fields {
			_ = mw.WriteField(k, v)
		}
		if file != nil {
			fw, _ := mw.CreateFormFile("file", "drake big.png")
			_, _ = fw.Write(file)
		}
		_ = mw.Close()
		return &b, mw.FormDataContentType()
	}
	send := func(method, path string, body io.Reader, ctype string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}

	// A multipart run: the file becomes image_url.
	body, ctype := form(nil, data)
	resp, b := send("POST", "/v1/algorithms/meme_classifier/run", body, ctype)
	var cls struct{ Label string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &cls) != nil || cls.Label != "drake_pref" {
		t.Fatalf("multipart run: %d %s", resp.StatusCode, b)
	}
	ref := resp.Header.Get("Pnp-Input-Ref")
	if !strings.HasPrefix(ref, "obj://uploads/") {
		t.Fatalf("Pnp-Input-Ref %q, want an obj://uploads/ reference (the gateway's own bucket)", ref)
	}
	// The upload reads back whole, as an attachment.
	resp, b = send("GET", "/v1/objects/"+strings.TrimPrefix(ref, "obj://"), nil, "")
	if resp.StatusCode != 200 || !bytes.Equal(b, data) || resp.Header.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("download of %s: %d, %d bytes (want %d), headers %v", ref, resp.StatusCode, len(b), len(data), resp.Header)
	}

	// A multipart job with other input fields: its output is too large
	// for a record, stored by reference, and read back through the API.
	body, ctype = form(map[string]string{"input": `{"max_side":1400}`}, data)
	resp, b = send("POST", "/v1/algorithms/image_thumbnail/jobs", body, ctype, "Idempotency-Key", "http-thumb")
	if resp.StatusCode != 202 {
		t.Fatalf("multipart job: %d %s", resp.StatusCode, b)
	}
	resp, b = send("GET", "/v1/jobs/http-thumb?wait=60s", nil, "")
	var res jobs.Result
	if resp.StatusCode != 200 || json.Unmarshal(b, &res) != nil || res.Status != jobs.StatusSucceeded || !strings.HasPrefix(res.OutputRef, "obj://outputs_image_thumbnail/") {
		t.Fatalf("thumbnail job: %d %s", resp.StatusCode, b)
	}
	thumb, err := imagethumbnail.Thumbnail(pic, 1400)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(thumb)
	resp, b = send("GET", "/v1/jobs/http-thumb/output", nil, "")
	if resp.StatusCode != 200 || !bytes.Equal(b, want) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("job output: %d, %d bytes; want the algorithm's output of %d bytes", resp.StatusCode, len(b), len(want))
	}

	// A plain upload, then a job on it by reference; a failed job has no
	// output.
	resp, b = send("POST", "/v1/objects?filename=notes.txt", strings.NewReader("not an image"), "application/octet-stream")
	var obj struct {
		Ref  string
		Size int64
	}
	if resp.StatusCode != 201 || json.Unmarshal(b, &obj) != nil || !strings.HasSuffix(obj.Ref, "/notes.txt") || obj.Size != 12 || resp.Header.Get("Location") != "/v1/objects/"+strings.TrimPrefix(obj.Ref, "obj://") {
		t.Fatalf("upload: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	resp, b = send("POST", "/v1/algorithms/meme_classifier/jobs", strings.NewReader(fmt.Sprintf(`{"image_url":%q}`, obj.Ref)), "application/json", "Idempotency-Key", "http-text")
	if resp.StatusCode != 202 {
		t.Fatalf("job on the upload: %d %s", resp.StatusCode, b)
	}
	if resp, b = send("GET", "/v1/jobs/http-text?wait=60s", nil, ""); resp.StatusCode != 200 || !strings.Contains(string(b), `"status":"failed"`) {
		t.Fatalf("job on a text file: %d %s", resp.StatusCode, b)
	}
	if resp, b = send("GET", "/v1/jobs/http-text/output", nil, ""); resp.StatusCode != 409 || !strings.Contains(string(b), "is failed") {
		t.Errorf("output of a failed job: %d %s, want 409", resp.StatusCode, b)
	}

	// Refusals.
	big := bytes.Repeat([]byte{7}, 9<<20)
	if resp, b = send("POST", "/v1/objects", bytes.NewReader(big), "application/octet-stream"); resp.StatusCode != 413 || !strings.Contains(string(b), "8388608") {
		t.Errorf("upload over --http-max-upload: %d %s, want 413 naming the limit", resp.StatusCode, b)
	}
	// Chunked, without a Content-Length to refuse up front.
	if resp, b = send("POST", "/v1/objects", io.MultiReader(bytes.NewReader(big)), "application/octet-stream"); resp.StatusCode != 413 || !strings.Contains(string(b), "8388608") {
		t.Errorf("chunked upload over --http-max-upload: %d %s, want 413 naming the limit", resp.StatusCode, b)
	}
	body, ctype = form(nil, big)
	if resp, b = send("POST", "/v1/algorithms/meme_classifier/run", body, ctype); resp.StatusCode != 413 {
		t.Errorf("multipart file over --http-max-upload: %d %s, want 413", resp.StatusCode, b)
	}
	body, ctype = form(map[string]string{"input": `{}`}, nil)
	if resp, b = send("POST", "/v1/algorithms/meme_classifier/run", body, ctype); resp.StatusCode != 400 || !strings.Contains(string(b), `"pointer":"/file"`) {
		t.Errorf("form without a file: %d %s, want 400 naming /file", resp.StatusCode, b)
	}
	var dup bytes.Buffer
	mw := multipart.NewWriter(&dup)
	_ = mw.WriteField("input", `{}`)
	_ = mw.WriteField("input", `{"max_side":9}`)
	_ = mw.Close()
	if resp, b = send("POST", "/v1/algorithms/image_thumbnail/run", &dup, mw.FormDataContentType()); resp.StatusCode != 400 || !strings.Contains(string(b), "given twice") {
		t.Errorf("form with input twice: %d %s, want 400", resp.StatusCode, b)
	}
	body, ctype = form(nil, data[:10])
	if resp, b = send("POST", "/v1/algorithms/meme_classifier/run", body, ctype, "Pnp-Timeout", "soon"); resp.StatusCode != 400 || resp.Header.Get("Pnp-Input-Ref") != "" {
		t.Errorf("bad Pnp-Timeout with a file: %d %s, want 400 before any upload", resp.StatusCode, b)
	}
	body, ctype = form(map[string]string{"input": `[1]`}, data[:10])
	if resp, b = send("POST", "/v1/algorithms/meme_classifier/run", body, ctype); resp.StatusCode != 400 || !strings.Contains(string(b), `"pointer":"/input"`) {
		t.Errorf("form with an input that is not an object: %d %s, want 400 naming /input", resp.StatusCode, b)
	}
	for _, p := range []string{"/v1/objects/results/x", "/v1/objects/inputs/no-such-object", "/v1/objects/KV_discovery/x", "/v1/objects/uploads_x/x", "/v1/objects/outputs_/x"} {
		if resp, b = send("GET", p, nil, ""); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d %s, want 404", p, resp.StatusCode, b)
		}
	}
}

// pnp provision creates the uploads bucket and an outputs bucket per
// algorithm named in --output-algorithms, each with its own size limit,
// and refuses a name that is not an algorithm's.
func TestProvisionObjectBuckets(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	code, stdout, stderr := runPnp(t, "provision", "--server", s.URL(),
		"--output-algorithms", "image_info,text_stats", "--uploads-max-bytes", "16MiB", "--algorithm-outputs-max-bytes", "8MiB")
	if code != 0 || !strings.Contains(stdout, "object stores inputs, uploads, outputs, outputs_image_info, outputs_text_stats") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	js, err := jetstream.New(s.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for bucket, want := range map[string]int64{
		"uploads": 16 << 20, "outputs_image_info": 8 << 20, "outputs_text_stats": 8 << 20, "inputs": jobs.DefaultObjectsMaxBytes,
	} {
		st, err := js.Stream(ctx, "OBJ_"+bucket)
		if err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
		if got := st.CachedInfo().Config.MaxBytes; got != want {
			t.Errorf("bucket %s: max bytes %d, want %d", bucket, got, want)
		}
	}
	if _, err := js.Stream(ctx, "OBJ_outputs_meme_classifier"); err == nil {
		t.Error("a bucket for an algorithm not named was created")
	}
	for _, bad := range []string{"Image_Info", "a.b", "outputs_x,9x"} {
		code, _, stderr := runPnp(t, "provision", "--server", s.URL(), "--output-algorithms", bad)
		if code != 2 || !strings.Contains(stderr, "--output-algorithms") || !strings.Contains(stderr, "not an algorithm name") {
			t.Errorf("--output-algorithms %s: exit %d, stderr %s", bad, code, stderr)
		}
	}
}
