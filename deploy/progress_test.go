package deploy

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// TestProgressReachesControllersFromItsTeamOnly: a runner user publishes
// progress reports of its own algorithms, which cross from its team's
// account to the controllers in APP; a report under another team's
// algorithm is refused by the server, so no runner can report (or forge)
// progress of another team's jobs, and no other role of APP can either.
func TestProgressReachesControllersFromItsTeamOnly(t *testing.T) {
	_, url := startConfServer(t)
	ctl := connect(t, url, "controller")
	sub, err := ctl.SubscribeSync(protocol.ProgressSubjectPrefix + "*")
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Flush(); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"job_id":"victim","fraction":0.5}`)
	for _, ok := range []struct{ role, alg string }{
		{"meme_runner", "meme_classifier"},
		{"text_runner", "language_detection"},
		{"py_runner", "text_stats"},
	} {
		c := connect(t, url, ok.role)
		if err := c.Publish(protocol.ProgressSubject(ok.alg), body); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil || m.Subject != protocol.ProgressSubject(ok.alg) {
			t.Fatalf("%s's report on %s: got %v, %v", ok.role, protocol.ProgressSubject(ok.alg), m, err)
		}
		c.expectClean(t)
	}
	for _, bad := range []struct{ role, alg string }{
		{"meme_runner", "language_detection"},
		{"text_runner", "meme_classifier"},
		{"py_runner", "iris_species_x"},
		{"producer", "meme_classifier"},
		{"gateway", "meme_classifier"},
	} {
		t.Run(bad.role+" may not report progress of "+bad.alg, func(t *testing.T) {
			c := connect(t, url, bad.role)
			subj := protocol.ProgressSubject(bad.alg)
			if err := c.Publish(subj, body); err != nil {
				t.Fatal(err)
			}
			c.expectDenied(t, subj)
		})
	}
	// Nothing of the refused reports reached the controllers: a fence
	// published after them is the next message.
	fence := connect(t, url, "meme_runner")
	if err := fence.Publish(protocol.ProgressSubject("image_info"), body); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil || m.Subject != protocol.ProgressSubject("image_info") {
		t.Fatalf("after the refused reports the controller got %v, %v, want the fence", subjectOf(m), err)
	}
}

func subjectOf(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return m.Subject
}
