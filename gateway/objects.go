package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// Data by reference over HTTP: uploads into the uploads bucket (the
// gateway's own: producers write inputs, which the gateway may not),
// downloads from the pipeline's buckets, a job's output wherever it is
// stored, and
// multipart requests whose file part becomes an obj:// reference in the
// input (docs/HTTP.md).

// DefaultMaxUpload is Config.MaxUpload's default.
const DefaultMaxUpload = 64 << 20

// transferTimeout is how long an upload or a download may take: the
// server's read and write timeouts are for JSON bodies.
const transferTimeout = 10 * time.Minute

// DefaultFileField is the input field that takes the reference of a
// multipart request's file unless its form field "field" names another.
const DefaultFileField = "image_url"

// objectJSON is an object as POST /v1/objects answers it.
type objectJSON struct {
	Ref    string `json:"ref"`
	Bucket string `json:"bucket"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
}

// countingReader counts what passes through it, and calls failed once
// when reading fails (not at the end).
type countingReader struct {
	r      io.Reader
	n      int64
	failed func()
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.failed != nil {
		c.failed()
		c.failed = nil
	}
	return n, err
}

// cleanupTimeout bounds the purge of a failed upload's chunks: without
// the right to purge (an older nats.conf) the request gets no answer.
const cleanupTimeout = 5 * time.Second

// errUploadTooLarge ends an upload past Config.MaxUpload.
var errUploadTooLarge = errors.New("upload too large")

// capReader fails with errUploadTooLarge once more than left bytes came.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.left -= int64(n); c.left < 0 {
		return n, errUploadTooLarge
	}
	return n, err
}

// objectName is a new unique object name, followed by "/" and the base of
// filename when it makes a tidy name segment.
func objectName(filename string) string {
	name := nuid.Next()
	base := path.Base(strings.ReplaceAll(filename, `\`, "/"))
	if base == "." || base == "/" || base == ".." || len(base) > 200 {
		return name
	}
	for _, c := range base {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-+=@", c)) {
			return name
		}
	}
	return name + "/" + base
}

// putInput streams body into the uploads bucket as a new object named after
// filename. On failure it has written the problem.
func (g *Gateway) putInput(w http.ResponseWriter, r *http.Request, filename string, body io.Reader) (objref.Ref, int64, bool) {
	// Not cancelled with the request: an upload that fails midway (the
	// client gone, over the limit) purges the chunks it wrote, and that
	// must still happen then, within cleanupTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), transferTimeout)
	defer cancel()
	cr := &countingReader{r: &capReader{r: body, left: g.cfg.MaxUpload}, failed: func() { time.AfterFunc(cleanupTimeout, cancel) }}
	ref, err := g.store.PutUpload(ctx, objectName(filename), cr)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return ref, cr.n, true
	case errors.Is(err, errUploadStalled):
		writeProblem(w, g.stalledProblem(""))
	case errors.Is(err, errUploadTooLarge), errors.As(err, &mbe):
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("upload over the limit of %d bytes", g.cfg.MaxUpload)})
	case errors.Is(err, jobs.ErrNoObjectStore):
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: fmt.Sprintf("bucket %s is not provisioned (run pnp provision)", jobs.UploadsBucket)})
	case r.Context().Err() != nil:
	default:
		g.log.Warn().Err(err).Msg("upload failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: fmt.Sprintf("cannot store the upload in bucket %s", jobs.UploadsBucket)})
	}
	return objref.Ref{}, 0, false
}

// upload is POST /v1/objects[?filename=F]: the body, any bytes up to
// MaxUpload, becomes a new object of the uploads bucket, named by a unique
// id (and F). The answer carries its obj:// reference.
func (g *Gateway) upload(w http.ResponseWriter, r *http.Request) {
	extendTransfer(w)
	if r.ContentLength > g.cfg.MaxUpload {
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("upload of %d bytes over the limit of %d bytes", r.ContentLength, g.cfg.MaxUpload)})
		return
	}
	release, ok := g.admitUpload(w, "")
	if !ok {
		return
	}
	defer release()
	g.guardUpload(w, r)
	ref, n, ok := g.putInput(w, r, r.URL.Query().Get("filename"), r.Body)
	if !ok {
		return
	}
	w.Header().Set("Location", objectPath(ref))
	writeJSON(w, http.StatusCreated, objectJSON{Ref: ref.String(), Bucket: ref.Bucket, Name: ref.Name, Size: n})
}

// objectPath is the API path that downloads ref.
func objectPath(ref objref.Ref) string {
	return "/v1/objects/" + strings.TrimPrefix(ref.String(), objref.Prefix)
}

// download is GET /v1/objects/{bucket}/{name...}: an object of the inputs,
// uploads, outputs or an algorithm's outputs bucket. Inputs and uploads
// are served as attachments of type application/octet-stream (never
// rendered as a page of this origin), outputs as the JSON they are.
func (g *Gateway) download(w http.ResponseWriter, r *http.Request) {
	ref := objref.Ref{Bucket: r.PathValue("bucket"), Name: r.PathValue("name")}
	if err := ref.Validate(); err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: strings.TrimPrefix(err.Error(), "objref: ")})
		return
	}
	ctype := "application/octet-stream"
	if objref.IsOutputsBucket(ref.Bucket) {
		ctype = "application/json"
	}
	g.sendObject(w, r, ref, ctype)
}

// sendObject streams the object ref names, or writes the problem.
func (g *Gateway) sendObject(w http.ResponseWriter, r *http.Request, ref objref.Ref, ctype string) {
	extendTransfer(w)
	o, err := g.store.OpenObject(r.Context(), ref)
	switch {
	case err == nil:
	case errors.Is(err, jobs.ErrNotReadable), errors.Is(err, objref.ErrNotFound):
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no object %s (objects of buckets %s, %s, %s and %s can be read)", ref, jobs.InputsBucket, jobs.UploadsBucket, jobs.OutputsBucket, objref.OutputsBucketFor("<algorithm>"))})
		return
	case r.Context().Err() != nil:
		return
	default:
		g.log.Warn().Err(err).Str("ref", ref.String()).Msg("opening an object failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot read the object: JetStream unavailable"})
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.FormatInt(o.Size(), 10))
	if ctype == "application/octet-stream" {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(ref.Name)}))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, o); err != nil && r.Context().Err() == nil {
		// The status is sent: a short body (Content-Length) tells the
		// client; the log tells why.
		g.log.Warn().Err(err).Str("ref", ref.String()).Msg("object read failed midway")
	}
}

// jobOutput is GET /v1/jobs/{id}/output: a succeeded job's output JSON,
// from its record or from the object its output_ref names.
func (g *Gateway) jobOutput(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidJobID(id) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("%q cannot name a job", id)})
		return
	}
	res, err := g.store.Result(r.Context(), id)
	if g.resultError(w, r, id, err) {
		return
	}
	if res.Status != jobs.StatusSucceeded {
		msg := fmt.Sprintf("job %s is %s: it has no output", id, res.Status)
		if res.Error != nil {
			msg += fmt.Sprintf(" (%d %s)", res.Error.Code, res.Error.Message)
		}
		writeProblem(w, problem{Code: http.StatusConflict, Algorithm: res.Algorithm, Message: msg})
		return
	}
	if res.OutputRef == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res.Output)
		return
	}
	ref, err := objref.Parse(res.OutputRef)
	if err != nil {
		writeProblem(w, problem{Code: http.StatusInternalServerError, Message: fmt.Sprintf("job %s: output_ref %q is not an object reference", id, res.OutputRef)})
		return
	}
	g.sendObject(w, r, ref, "application/json")
}

// isMultipart reports whether r carries a multipart/form-data body.
func isMultipart(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "multipart/form-data"
}

// readInput reads the input of run and jobs: the JSON body, or, for a
// multipart/form-data request, the form's file uploaded to the uploads
// bucket and its reference put in the input (form fields: file, the
// upload; input, the other fields as a JSON object; field, the input
// field for the reference, default image_url). The reference is also
// answered in the Pnp-Input-Ref header. On failure it has written the
// problem.
func (g *Gateway) readInput(w http.ResponseWriter, r *http.Request, alg string) ([]byte, bool) {
	if !isMultipart(r) {
		return g.readBody(w, r)
	}
	extendTransfer(w)
	limit := g.cfg.MaxUpload + g.maxPayload() + 64<<10
	if r.ContentLength > limit {
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Algorithm: alg, Message: fmt.Sprintf("upload over the limit of %d bytes", g.cfg.MaxUpload)})
		return nil, false
	}
	release, ok := g.admitUpload(w, alg)
	if !ok {
		return nil, false
	}
	defer release()
	uploaded := g.guardUpload(w, r)
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	mr, err := r.MultipartReader()
	if err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: alg, Message: "malformed multipart/form-data body: " + err.Error()})
		return nil, false
	}
	bad := func(pointer, msg string) ([]byte, bool) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: alg, Message: "invalid form", Violations: []schemas.Violation{{Pointer: pointer, Message: msg}}})
		return nil, false
	}
	input := map[string]json.RawMessage{}
	field := DefaultFileField
	var ref objref.Ref
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Algorithm: alg, Message: fmt.Sprintf("upload over the limit of %d bytes", g.cfg.MaxUpload)})
			return nil, false
		}
		if errors.Is(err, errUploadStalled) {
			writeProblem(w, g.stalledProblem(alg))
			return nil, false
		}
		if err != nil {
			writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: alg, Message: "malformed multipart/form-data body: " + err.Error()})
			return nil, false
		}
		name := part.FormName()
		if seen[name] {
			return bad("/"+truncate(name, 64), fmt.Sprintf("form field %q given twice", truncate(name, 64)))
		}
		seen[name] = true
		switch name {
		case "file":
			var ok bool
			if ref, _, ok = g.putInput(w, r, part.FileName(), part); !ok {
				return nil, false
			}
		case "input":
			b, err := io.ReadAll(io.LimitReader(part, g.maxPayload()+1))
			if err != nil {
				return bad("/input", "cannot read the form field")
			}
			if int64(len(b)) > g.maxPayload() {
				writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Algorithm: alg, Message: fmt.Sprintf("form field input over the limit of %d bytes (the NATS server's max payload)", g.maxPayload())})
				return nil, false
			}
			if err := json.Unmarshal(b, &input); err != nil || input == nil {
				return bad("/input", "not a JSON object")
			}
		case "field":
			b, err := io.ReadAll(io.LimitReader(part, 257))
			if err != nil || len(b) == 0 || len(b) > 256 {
				return bad("/field", "want the name of an input field, at most 256 bytes")
			}
			field = string(b)
		default:
			return bad("/"+name, fmt.Sprintf("unknown form field %q: want file, input and field", truncate(name, 64)))
		}
	}
	if ref.Bucket == "" {
		return bad("/file", "no form field file: the upload is missing")
	}
	input[field], _ = json.Marshal(ref.String())
	body, err := json.Marshal(input)
	if err != nil {
		return bad("/input", err.Error())
	}
	w.Header().Set("Pnp-Input-Ref", ref.String())
	uploaded()
	return body, true
}

// maxPayload is the NATS server's max payload (1 MiB when unknown).
func (g *Gateway) maxPayload() int64 {
	if n := g.nc.MaxPayload(); n > 0 {
		return n
	}
	return 1 << 20
}

// extendTransfer gives an upload or a download transferTimeout.
func extendTransfer(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(transferTimeout))
	_ = rc.SetWriteDeadline(time.Now().Add(transferTimeout))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
