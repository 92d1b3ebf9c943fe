package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/termsafe"
	"github.com/pnpworker/pnpworker/rollout"
)

// registryFor connects and opens (or provisions) the discovery registry,
// through JetStream under jf's prefix or in nf's domain.
func registryFor(ctx context.Context, nf *natsFlags, jf *jsPrefixFlag, log zerolog.Logger, provision bool, cfg discovery.Config) (*nats.Conn, *discovery.Registry, error) {
	if err := errors.Join(nf.check(), jf.check(nf)); err != nil {
		return nil, nil, err
	}
	nc, err := nf.connect("pnp", log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jf.jetStream(nc, nf)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	var reg *discovery.Registry
	if provision {
		reg, err = discovery.Provision(ctx, js, cfg)
	} else {
		reg, err = discovery.Open(ctx, js, cfg)
	}
	if err != nil {
		nc.Close()
		if !provision && strings.Contains(err.Error(), jetstream.ErrBucketNotFound.Error()) {
			return nil, nil, fmt.Errorf("no discovery bucket on %s yet: start a runner or run 'pnp discovery provision'", nf.server)
		}
		return nil, nil, err
	}
	return nc, reg, nil
}

func cmdDiscovery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stdout, "usage: pnp discovery provision|ls|watch [flags]")
		fmt.Fprintln(stdout, "  provision  create or update the discovery bucket (idempotent)")
		fmt.Fprintln(stdout, "  ls         list live runner instances")
		fmt.Fprintln(stdout, "  watch      print joins, changes, leaves and expiries as they happen (--heartbeats: every heartbeat too)")
		switch {
		case len(args) == 0:
			return fmt.Errorf("%w: missing subcommand", errUsage)
		case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
			return nil
		default:
			return fmt.Errorf("%w: want a subcommand (provision, ls or watch) before %s", errUsage, args[0])
		}
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("discovery "+sub, "pnp discovery "+sub+" [flags]", stdout)
	var nf natsFlags
	var lf logFlags
	nf.register(fs)
	lf.register(fs)
	var cfg discovery.Config
	switch sub {
	case "provision":
		fs.DurationVar(&cfg.TTL, "ttl", discovery.DefaultTTL, "max age of a registration without heartbeat")
		fs.IntVar(&cfg.Replicas, "replicas", 1, "stream replicas in a cluster")
		cfg.MaxBytes = discovery.DefaultMaxBytes
		fs.Var(byteSize{&cfg.MaxBytes}, "max-bytes", "size limit of the bucket (-1: none)")
		cfg.Update = true // an explicit provision brings an existing bucket to these settings
	case "ls", "watch":
	default:
		return fmt.Errorf("%w: unknown subcommand %q (want provision, ls or watch)", errUsage, sub)
	}
	jsonOut, heartbeats := false, false
	if sub == "ls" {
		fs.BoolVar(&jsonOut, "json", false, "print the records as JSON")
	}
	if sub == "watch" {
		fs.BoolVar(&heartbeats, "heartbeats", false, "also print every heartbeat (by default only joins, changes, leaves and expiries)")
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	nc, reg, err := registryFor(ctx, &nf, &jsPrefixFlag{}, log, sub == "provision", cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	switch sub {
	case "provision":
		fmt.Fprintf(stdout, "bucket %s ready (max age %s)\n", discovery.Bucket, reg.TTL())
		return nil
	case "ls":
		recs, err := reg.List(ctx, warnSkip(log))
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSON(stdout, recs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tVERSION\tQUEUE\tHOST\tUP\tLAST HEARTBEAT")
		for _, r := range recs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s ago\n", safe(r.Key()), safe(r.Version), safe(r.QueueGroup), safe(r.Host),
				time.Since(r.StartedAt).Round(time.Second), time.Since(r.HeartbeatAt).Round(100*time.Millisecond))
		}
		tw.Flush()
		if len(recs) == 0 {
			fmt.Fprintln(stderr, "no runner is registered")
		}
		return nil
	default: // watch
		return reg.Watch(ctx, heartbeats, func(e discovery.Event) {
			ts := e.At.Local().Format(time.TimeOnly)
			switch e.Kind {
			case discovery.EventListed:
				fmt.Fprintln(stdout, "# current registrations listed; watching for changes")
			case discovery.EventInvalid:
				fmt.Fprintf(stdout, "%s INVALID %s: %s\n", ts, safe(e.Key), safe(e.Err.Error()))
			case discovery.EventJoin:
				fmt.Fprintf(stdout, "%s JOIN      %s version=%s host=%s\n", ts, safe(e.Key), safe(e.Registration.Version), safe(e.Registration.Host))
			case discovery.EventChange:
				fmt.Fprintf(stdout, "%s CHANGE    %s version=%s host=%s\n", ts, safe(e.Key), safe(e.Registration.Version), safe(e.Registration.Host))
			case discovery.EventHeartbeat:
				fmt.Fprintf(stdout, "%s HEARTBEAT %s\n", ts, safe(e.Key))
			case discovery.EventLeave:
				fmt.Fprintf(stdout, "%s LEAVE     %s (deregistered)\n", ts, safe(e.Key))
			case discovery.EventExpire:
				fmt.Fprintf(stdout, "%s EXPIRE    %s (no heartbeat)\n", ts, safe(e.Key))
			}
		})
	}
}

func warnSkip(log zerolog.Logger) func(string, error) {
	return func(key string, err error) {
		log.Warn().Str("key", key).Err(err).Msg("skipping invalid registration")
	}
}

// writeJSON prints v as indented JSON, with the characters a terminal would
// act on escaped (termsafe.JSON): the output is read by people too.
func writeJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(termsafe.JSON(buf.Bytes()))
	return err
}

// safe makes a value that came from NATS (a record field, a key, a reason)
// safe to print on a terminal: control characters, escape sequences and
// bidirectional overrides are shown as escapes. Every human-readable output
// of pnp passes its values through it.
func safe(s string) string { return termsafe.String(s) }

// algorithmSummary groups the instances of one algorithm.
type algorithmSummary struct {
	Algorithm    string                   `json:"algorithm"`
	Versions     []string                 `json:"versions"`
	Subject      string                   `json:"subject"`
	Description  string                   `json:"description,omitempty"`
	TimeoutMS    int64                    `json:"timeout_ms"`
	InputSchema  json.RawMessage          `json:"input_schema"`
	OutputSchema json.RawMessage          `json:"output_schema"`
	Instances    []discovery.Registration `json:"instances"`
	// ByVersion counts the live instances of each version, with its
	// pinned subject and its part in the route.
	ByVersion []versionSummary `json:"by_version"`
	// Route is the algorithm's route, if it has one.
	Route     *rollout.Route `json:"route,omitempty"`
	startedAt time.Time
}

// versionSummary is one live version of an algorithm.
type versionSummary struct {
	Version       string `json:"version"`
	Instances     int    `json:"instances"`
	PinnedSubject string `json:"pinned_subject"`
	// Role is the version's part in the route: stable, canary, shadow,
	// fallback (the route's stable version is not live, so every version
	// serves run.<algorithm>), unrouted (a route exists and names another
	// version), or any (no route).
	Role string `json:"role"`
}

// routesFor reads every route; none when the routes bucket does not exist.
func routesFor(ctx context.Context, nf *natsFlags, nc *nats.Conn, log zerolog.Logger) map[string]rollout.Route {
	out := map[string]rollout.Route{}
	js, err := nf.jetStream(nc)
	if err != nil {
		return out
	}
	st, err := rollout.Open(ctx, js, rollout.Config{})
	if err != nil {
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			log.Warn().Err(err).Msg("cannot read routes")
		}
		return out
	}
	rs, err := st.List(ctx, func(key string, err error) { log.Warn().Str("key", key).Err(err).Msg("skipping invalid route") })
	if err != nil {
		log.Warn().Err(err).Msg("cannot read routes")
	}
	for _, r := range rs {
		out[r.Algorithm] = r
	}
	return out
}

func cmdAlgorithms(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "declare" {
		return cmdAlgorithmsDeclare(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("algorithms", "pnp algorithms [--json] [flags]\n       pnp algorithms declare <algorithm>...   accept its jobs before any runner has started", stdout)
	var nf natsFlags
	var lf logFlags
	nf.register(fs)
	lf.register(fs)
	jsonOut := fs.Bool("json", false, "print each algorithm with its schemas and instance records as JSON")
	if err := fs.parse(args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	nc, reg, err := registryFor(ctx, &nf, &jsPrefixFlag{}, log, false, discovery.Config{})
	if err != nil {
		return err
	}
	defer nc.Close()
	recs, err := reg.List(ctx, warnSkip(log))
	if err != nil {
		return err
	}
	byAlg := map[string]*algorithmSummary{}
	var names []string
	for _, r := range recs {
		s, ok := byAlg[r.Algorithm]
		if !ok {
			s = &algorithmSummary{Algorithm: r.Algorithm, Subject: discovery.RequestSubject(r.Algorithm)}
			byAlg[r.Algorithm] = s
			names = append(names, r.Algorithm)
		}
		if !slices.Contains(s.Versions, r.Version) {
			s.Versions = append(s.Versions, r.Version)
		}
		// The most recently started instance describes the algorithm: during
		// a rolling upgrade that is the new version.
		if s.InputSchema == nil || r.StartedAt.After(s.startedAt) {
			s.Description, s.TimeoutMS, s.InputSchema, s.OutputSchema = r.Description, r.TimeoutMS, r.InputSchema, r.OutputSchema
			s.startedAt = r.StartedAt
		}
		s.Instances = append(s.Instances, r)
	}
	sort.Strings(names)
	routes := routesFor(ctx, &nf, nc, log)
	out := make([]*algorithmSummary, 0, len(names))
	for _, n := range names {
		s := byAlg[n]
		sort.Strings(s.Versions)
		count := map[string]int{}
		for _, r := range s.Instances {
			count[r.Version]++
		}
		rt, ok := routes[n]
		if ok {
			s.Route = &rt
		}
		for _, v := range s.Versions {
			s.ByVersion = append(s.ByVersion, versionSummary{Version: v, Instances: count[v],
				PinnedSubject: discovery.PinnedSubject(n, v), Role: rollout.Role(rt, ok, v, count[rt.Stable] > 0)})
		}
		out = append(out, s)
		if len(s.Versions) > 1 && !ok {
			fmt.Fprintf(stderr, "warning: %s has %d versions live (%s) and no route: plain %s requests reach any of them; pick one with 'pnp route set %s --stable VERSION'\n",
				safe(n), len(s.Versions), safe(strings.Join(s.Versions, ", ")), safe(s.Subject), safe(n))
		}
	}
	if *jsonOut {
		return writeJSON(stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(stderr, "no algorithm is registered: start one with 'pnp runner' or 'pnp up'")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALGORITHM\tVERSION\tINSTANCES\tSUBJECT\tTIMEOUT\tROUTE\tPINNED SUBJECT\tDESCRIPTION")
	for _, s := range out {
		for _, v := range s.ByVersion {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", safe(s.Algorithm), safe(v.Version), v.Instances, safe(s.Subject),
				time.Duration(s.TimeoutMS)*time.Millisecond, v.Role, safe(v.PinnedSubject), safe(s.Description))
		}
	}
	return tw.Flush()
}
