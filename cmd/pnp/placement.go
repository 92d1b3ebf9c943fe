package main

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
)

// placementFlags are --placement-cluster and --placement-tags: where in a
// supercluster the commands that provision put the streams and buckets.
type placementFlags struct{ cluster, tags string }

func (p *placementFlags) register(fs *flagSet) {
	fs.StringVar(&p.cluster, "placement-cluster", env("PNP_PLACEMENT_CLUSTER", ""), "cluster (region) of a supercluster every stream and bucket is placed in when created; empty: the cluster of the server connected to (env PNP_PLACEMENT_CLUSTER)")
	fs.StringVar(&p.tags, "placement-tags", env("PNP_PLACEMENT_TAGS", ""), "comma-separated server tags every stream and bucket is placed on, e.g. region:eu (env PNP_PLACEMENT_TAGS)")
}

// placement returns the parsed placement, nil when no flag is set.
func (p *placementFlags) placement() (*jetstream.Placement, error) {
	var tags []string
	for _, t := range strings.Split(p.tags, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	cluster := strings.TrimSpace(p.cluster)
	if cluster == "" && len(tags) == 0 {
		return nil, nil
	}
	if strings.ContainsAny(cluster, " \t\r\n.*>") {
		return nil, fmt.Errorf("%w: --placement-cluster (PNP_PLACEMENT_CLUSTER) %q is not a cluster name", errUsage, p.cluster)
	}
	return &jetstream.Placement{Cluster: cluster, Tags: tags}, nil
}

// apply puts every stream and bucket of cfg, and the rollout streams
// and buckets given, in the flags' placement.
func (p *placementFlags) apply(cfg *jobs.StoreConfig, routes *rollout.Config, compare *rollout.CompareConfig, history *rollout.HistoryConfig) error {
	pl, err := p.placement()
	if err != nil || pl == nil {
		return err
	}
	cfg.Placement, cfg.Discovery.Placement = pl, pl
	routes.Placement, compare.Placement, history.Placement = pl, pl, pl
	return nil
}
