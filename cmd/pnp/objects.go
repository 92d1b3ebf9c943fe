package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/internal/termsafe"
	"github.com/pnpworker/pnpworker/jobs"
)

// cmdPut uploads files to an object store bucket and prints a reference
// per file, for image_url and other URL inputs.
func cmdPut(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("put", "pnp put FILE... [--bucket inputs] [--name NAME] [--ttl 1h]", stdout)
	var (
		nf     natsFlags
		lf     logFlags
		bucket = fs.String("bucket", objref.InputsBucket, "object store bucket to upload to")
		name   = fs.String("name", "", "object name (one file only); default <unique id>/<file name>, so uploads never replace each other")
		ttl    = fs.Duration("ttl", jobs.DefaultInputTTL, "how long objects are kept, when put creates the bucket; an existing bucket keeps its own TTL (set by pnp provision)")
	)
	nf.register(fs)
	lf.register(fs)
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(files) == 0:
		return fmt.Errorf("%w: want at least one file", errUsage)
	case *name != "" && len(files) > 1:
		return fmt.Errorf("%w: --name needs exactly one file", errUsage)
	case !objref.ValidBucket(*bucket):
		return fmt.Errorf("%w: --bucket %q is not a bucket name", errUsage, *bucket)
	case *ttl < 0:
		return fmt.Errorf("%w: --ttl %s is negative", errUsage, *ttl)
	}
	ttlSet := false
	fs.Visit(func(f *flag.Flag) { ttlSet = ttlSet || f.Name == "ttl" })
	nc, js, err := openJetStream(&nf, &lf, stderr, "pnp put")
	if err != nil {
		return err
	}
	defer nc.Close()
	store, err := js.ObjectStore(ctx, *bucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
		// max_bytes, as an account with max_bytes_required demands.
		store, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: *bucket, TTL: *ttl, MaxBytes: jobs.DefaultObjectsMaxBytes, Storage: jetstream.FileStorage})
		if err != nil {
			return fmt.Errorf("bucket %s does not exist and cannot be created (pnp provision creates inputs): %w", *bucket, err)
		}
	case err != nil:
		return fmt.Errorf("bucket %s: %w", *bucket, err)
	case ttlSet:
		if st, err := store.Status(ctx); err == nil && st.TTL() != *ttl {
			fmt.Fprintf(stderr, "pnp put: bucket %s keeps objects %s (its TTL); --ttl applies only to a bucket put creates\n", *bucket, st.TTL())
		}
	}
	for _, path := range files {
		n := *name
		if n == "" {
			n = nuid.Next() + "/" + filepath.Base(path)
		}
		if err := putFile(ctx, js, *bucket, n, path, stdout); err != nil {
			return err
		}
	}
	return nil
}

func putFile(ctx context.Context, js jetstream.JetStream, bucket, name, path string, stdout io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ref, err := objref.Put(ctx, js, bucket, name, f)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, termsafe.String(ref.String()))
	return err
}

// cmdGet writes an object to a file or stdout.
func cmdGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("get", "pnp get obj://BUCKET/NAME [-o FILE]", stdout)
	var (
		nf  natsFlags
		lf  logFlags
		out = fs.String("o", "", "write the object to this file; default stdout")
	)
	nf.register(fs)
	lf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one obj:// reference", errUsage)
	}
	ref, err := objref.Parse(pos[0])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	nc, js, err := openJetStream(&nf, &lf, stderr, "pnp get")
	if err != nil {
		return err
	}
	defer nc.Close()
	return getObject(ctx, js, ref, *out, stdout)
}

// getObject streams the object ref names to path, or to stdout when path
// is "" or "-" (escaped by termsafe when stdout is a terminal: an object is
// anybody's bytes). A file is written whole or not at all.
func getObject(ctx context.Context, js jetstream.JetStream, ref objref.Ref, path string, stdout io.Writer) error {
	obj, err := objref.Open(ctx, js, ref)
	if err != nil {
		return err
	}
	if (path == "" || path == "-") && isTerminal(stdout) {
		tw := termsafe.NewWriter(stdout)
		if _, err := io.Copy(tw, obj); err != nil {
			return err
		}
		return tw.Flush()
	}
	return writeOut(path, stdout, obj)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// writeOut copies r to path (through a temporary file renamed into place),
// or to stdout when path is "" or "-".
func writeOut(path string, stdout io.Writer, r io.Reader) error {
	if path == "" || path == "-" {
		_, err := io.Copy(stdout, r)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeResultOutput writes a succeeded result's output JSON — inline or
// fetched from its output_ref — to path.
func writeResultOutput(ctx context.Context, store *jobs.Store, res jobs.Result, path string, stdout io.Writer) error {
	if res.Status != jobs.StatusSucceeded {
		return nil // res.Err reports it
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	data, err := store.Output(ctx, res, 0)
	if err != nil {
		return err
	}
	if path == "" || path == "-" {
		// Still valid JSON, with nothing a terminal acts on.
		data = termsafe.JSON(data)
	}
	return writeOut(path, stdout, bytes.NewReader(data))
}
