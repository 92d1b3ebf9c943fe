package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
)

// Under nats.conf, the producer submits a delayed job and reads it back
// as scheduled, the controller runs it at its time, and the gateway user
// adds, lists and removes schedules and removes a delayed job: none meets
// a permission violation.
func TestSchedulesUnderRoles(t *testing.T) {
	d := startDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sub, err := d.store.Submit(ctx, "language_detection", []byte(`{"text":"Guten Morgen, wie geht es dir heute?"}`),
		jobs.SubmitOptions{ID: "role-delayed", NotBefore: time.Now().Add(2 * time.Second)})
	if err != nil {
		t.Fatalf("producer submits a delayed job: %v", err)
	}
	if r, err := d.store.Result(ctx, sub.ID); err != nil || r.Status != jobs.StatusScheduled {
		t.Fatalf("producer reads the delayed job: %+v, %v", r, err)
	}
	res, err := d.store.WaitResult(ctx, sub.ID, nil)
	if err != nil || res.Status != controller.StatusSucceeded {
		t.Fatalf("delayed job under the controller role: %+v, %v", res, err)
	}
	d.producer.expectClean(t)

	gw := connect(t, d.url, "gateway")
	store, err := controller.OpenStore(ctx, gw.js(t), controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sch := jobs.Schedule{Name: "nightly", Algorithm: "language_detection", Cron: "0 0 3 * * *", Input: json.RawMessage(`{"text":"bonjour"}`)}
	if err := store.AddSchedule(ctx, sch); err != nil {
		t.Fatalf("gateway adds a schedule: %v", err)
	}
	list, err := store.ListSchedules(ctx)
	if err != nil || len(list) != 1 || list[0].NextRun.Hour() != 3 {
		t.Fatalf("gateway lists schedules: %+v, %v", list, err)
	}
	if err := store.RemoveSchedule(ctx, "nightly"); err != nil {
		t.Fatalf("gateway removes a schedule: %v", err)
	}
	if _, err := store.Submit(ctx, "language_detection", []byte(`{"text":"hallo"}`), jobs.SubmitOptions{ID: "role-gone", NotBefore: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("gateway submits a delayed job: %v", err)
	}
	if ok, err := store.Unschedule(ctx, "role-gone"); !ok || err != nil {
		t.Fatalf("gateway removes a delayed job: %v, %v", ok, err)
	}
	if _, err := store.Result(ctx, "role-gone"); !errors.Is(err, jobs.ErrNoResult) {
		t.Errorf("removed delayed job: %v, want ErrNoResult", err)
	}
	gw.expectClean(t)
}
