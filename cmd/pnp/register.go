package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pnpworker/pnpworker/discovery"
)

// cmdRegister keeps the registration of a runner that is not built on this
// module (a shell loop around the nats CLI, a program in another language)
// alive: it registers the record, renews it every third of the bucket's
// max age, and deletes it when interrupted.
func cmdRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("register", "pnp register --record FILE [--server URL]", stdout)
	var (
		nf     natsFlags
		lf     logFlags
		record = fs.String("record", "", "registration record, JSON per schemas/registration.json (started_at and heartbeat_at may be left out)")
	)
	var jf jsPrefixFlag
	nf.register(fs)
	lf.register(fs)
	jf.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := errors.Join(nf.check(), jf.check(&nf)); err != nil {
		return err
	}
	if *record == "" {
		return fmt.Errorf("%w: --record FILE is required", errUsage)
	}
	data, err := os.ReadFile(*record)
	if err != nil {
		return err
	}
	var rec discovery.Registration
	if err := json.Unmarshal(data, &rec); err != nil {
		return fmt.Errorf("%w: %s: not a registration record: %v", errUsage, *record, err)
	}
	if rec.StartedAt.IsZero() {
		rec.StartedAt = time.Now().UTC()
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	nc, reg, err := registryFor(ctx, &nf, &jf, log, false, discovery.Config{})
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := reg.Register(ctx, rec); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %s; renewing every %s until interrupted, then deregistering\n", rec.Key(), reg.TTL()/3)
	reg.Keepalive(ctx, rec, log)
	fmt.Fprintf(stdout, "deregistered %s\n", rec.Key())
	return nil
}
