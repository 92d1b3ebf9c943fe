package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/imagefetch/imagetest"
)

// maxUpRSS is the peak resident memory `pnp up` may reach while decoding
// eight 16-bit 4096×4096 PNGs at once (128 MiB each once decoded).
const maxUpRSS = 400 << 20

// Eight 16-bit 4096×4096 RGBA PNGs of ~140 KB each, submitted at once as
// jobs to `pnp up` (a child process): every job succeeds, the ones the
// decode budget turned away (503 not started) after the controller retried
// them, and the process's peak RSS (VmHWM) stays under maxUpRSS. Without
// a decode budget in bytes the eight decode side by side and the process
// passes 1 GB.
func TestUpDecodeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pnp and decodes 1 GiB of pixels: skipped in -short mode")
	}
	isolateEnv(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "pnp")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/pnpworker/pnpworker/cmd/pnp").CombinedOutput(); err != nil {
		t.Fatalf("build pnp: %v\n%s", err, out)
	}
	addr, _ := freeLoopbackAddr(t)
	up := exec.Command(bin, "up", "--listen", addr, "--data", filepath.Join(dir, "data"),
		"--algorithms", "image_info,meme_classifier", "--log-level", "warn")
	var stderr lockedBuffer
	up.Stderr = &stderr
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = up.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = up.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(pnpTimeout):
			_ = up.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("pnp up stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ctrl-C stops it.") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("pnp up exited before it was up:\n%s", stderr.String())
	case <-time.After(pnpTimeout):
		t.Fatalf("pnp up not up after %s:\n%s", pnpTimeout, stderr.String())
	}
	base := vmHWM(t, up.Process.Pid)

	nc, err := nats.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The banner comes when the runner serves; the controller provisions
	// the job streams beside it.
	var store *controller.Store
	for store == nil {
		if store, err = controller.OpenStore(ctx, js, controller.StoreConfig{}); err != nil {
			if ctx.Err() != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	const jobs = 8
	inputs := make([][]byte, jobs)
	var wg sync.WaitGroup
	for i := range inputs {
		wg.Go(func() {
			png := imagetest.PNG(imagetest.PNGSpec{W: 4096, H: 4096, ColorType: imagetest.RGBA, Depth: 16, Seed: i})
			inputs[i], _ = json.Marshal(map[string]string{"image_url": "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)})
		})
	}
	wg.Wait()
	ids := make([]string, jobs)
	for i, in := range inputs {
		alg := []string{"image_info", "meme_classifier"}[i%2]
		sub, err := store.Submit(ctx, alg, in, controller.SubmitOptions{ID: fmt.Sprintf("big-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = sub.ID
	}
	for _, id := range ids {
		r, err := store.WaitResult(ctx, id, nil)
		if err != nil {
			t.Fatalf("job %s: %v (peak RSS so far %d MiB)", id, err, vmHWM(t, up.Process.Pid)>>20)
		}
		if r.Status != controller.StatusSucceeded {
			t.Errorf("job %s: %s after %d attempts: %+v", id, r.Status, r.Attempts, r.Error)
		}
	}
	peak := vmHWM(t, up.Process.Pid)
	t.Logf("pnp up peak RSS: %d MiB before the jobs, %d MiB after %d jobs of 16-bit 4096×4096 PNGs (%d refusals for a full decode budget, retried)",
		base>>20, peak>>20, jobs, strings.Count(stderr.String(), `"code":503`))
	if peak > maxUpRSS {
		t.Errorf("pnp up peak RSS %d MiB, want at most %d MiB", peak>>20, maxUpRSS>>20)
	}
}

// vmHWM returns the peak resident set size of process pid (Linux).
func vmHWM(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("peak RSS unavailable: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
