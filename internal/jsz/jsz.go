// Package jsz reads the backlog of a JetStream consumer from a NATS
// server's HTTP monitoring endpoint the way KEDA's nats-jetstream scaler
// does: the same URL, the same fields of the answer, the same arithmetic.
// Tests use it to prove that what the scaler would see is what the system
// holds; an operator can use it to check a ScaledObject's settings.
//
// The scaler asks
//
//	http://<natsServerMonitoringEndpoint>/jsz?acc=<account>&consumers=true&config=true
//
// finds the account by its name, the stream by its name and the consumer by
// its name, and reports the consumer's num_pending + num_ack_pending as the
// lag; the scaler is active while the lag exceeds activationLagThreshold.
// When the stream holds no consumer of that name it reports the stream's
// last sequence instead (Reading.ConsumerFound is false then), and when the
// account or stream is missing it fails. In a cluster (meta_cluster's
// cluster_size above 1) the consumer's numbers are only current on its
// leader (the consumer detail's cluster.leader, a server name), so the
// scaler reads them from the leader's monitoring endpoint.
package jsz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// URL is the address the scaler asks: endpoint is its
// natsServerMonitoringEndpoint (host:port), account its account, https its
// useHttps. The account goes in as it is, unescaped, like the scaler's.
func URL(endpoint, account string, https bool) string {
	scheme := "http"
	if https {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/jsz?acc=%s&consumers=true&config=true", scheme, endpoint, account)
}

// Target names what a ScaledObject's nats-jetstream trigger reads.
type Target struct {
	Account  string // account: "$G" on a server without accounts
	Stream   string // stream
	Consumer string // consumer: the durable name
}

// Reading is what the scaler would compute from one answer.
type Reading struct {
	// Lag is num_pending + num_ack_pending of the consumer, or the
	// stream's last sequence when ConsumerFound is false.
	Lag int64
	// ConsumerFound says the stream has a consumer of the target's name.
	ConsumerFound bool
	// Leader is the server name of the consumer's leader ("" when not
	// clustered or not found); ClusterSize is meta_cluster.cluster_size.
	Leader      string
	ClusterSize int
	// Server is the name of the server that answered, from /varz ("" when
	// it was not asked: not clustered).
	Server string
}

// Active reports whether the scaler would be active at this reading with
// the given activationLagThreshold (default 0).
func (r Reading) Active(activationLagThreshold int64) bool { return r.Lag > activationLagThreshold }

// ErrStreamNotFound is returned when the answer has no stream of the
// target's name in the target's account: the scaler fails too.
var ErrStreamNotFound = errors.New("jsz: stream not found")

// The parts of the /jsz answer the scaler decodes, no more.
type answer struct {
	Accounts []struct {
		Name    string `json:"name"`
		Streams []struct {
			Name  string `json:"name"`
			State struct {
				LastSeq int64 `json:"last_seq"`
			} `json:"state"`
			Consumers []struct {
				Name          string `json:"name"`
				NumPending    int64  `json:"num_pending"`
				NumAckPending int64  `json:"num_ack_pending"`
				Cluster       struct {
					Leader string `json:"leader"`
				} `json:"cluster"`
			} `json:"consumer_detail"`
		} `json:"stream_detail"`
	} `json:"account_details"`
	MetaCluster struct {
		ClusterSize int `json:"cluster_size"`
	} `json:"meta_cluster"`
}

// Read asks each of endpoints (host:port of a server's monitoring
// listener; one per node of a cluster) for t, starting with the first.
// On a single server, or when the first endpoint's server leads the
// consumer, that answer is the reading. In a cluster it reads the
// consumer from its leader: it asks each endpoint's /varz for its server
// name and takes the answer of the one named as the leader; when none is,
// it returns the first answer with Server "". client nil means
// http.DefaultClient.
func Read(ctx context.Context, client *http.Client, t Target, endpoints ...string) (Reading, error) {
	if client == nil {
		client = http.DefaultClient
	}
	if len(endpoints) == 0 {
		return Reading{}, errors.New("jsz: no monitoring endpoint")
	}
	first, err := readOne(ctx, client, t, endpoints[0])
	if err != nil || first.ClusterSize <= 1 || !first.ConsumerFound || first.Leader == "" {
		return first, err
	}
	for _, ep := range endpoints {
		name, err := serverName(ctx, client, ep)
		if err != nil {
			return Reading{}, err
		}
		if name != first.Leader {
			continue
		}
		r, err := readOne(ctx, client, t, ep)
		r.Server = name
		return r, err
	}
	return first, nil
}

func readOne(ctx context.Context, client *http.Client, t Target, endpoint string) (Reading, error) {
	var a answer
	if err := get(ctx, client, URL(endpoint, t.Account, false), &a); err != nil {
		return Reading{}, err
	}
	r := Reading{ClusterSize: a.MetaCluster.ClusterSize}
	for _, acc := range a.Accounts {
		if acc.Name != t.Account {
			continue
		}
		for _, st := range acc.Streams {
			if st.Name != t.Stream {
				continue
			}
			for _, c := range st.Consumers {
				if c.Name == t.Consumer {
					r.Lag, r.ConsumerFound, r.Leader = c.NumPending+c.NumAckPending, true, c.Cluster.Leader
					return r, nil
				}
			}
			r.Lag = st.State.LastSeq
			return r, nil
		}
	}
	return r, fmt.Errorf("%w: account %q, stream %q at %s", ErrStreamNotFound, t.Account, t.Stream, endpoint)
}

func serverName(ctx context.Context, client *http.Client, endpoint string) (string, error) {
	var v struct {
		ServerName string `json:"server_name"`
	}
	if err := get(ctx, client, "http://"+endpoint+"/varz", &v); err != nil {
		return "", err
	}
	return v.ServerName, nil
}

func get(ctx context.Context, client *http.Client, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("jsz: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("jsz: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("jsz: GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("jsz: GET %s: decode: %w", url, err)
	}
	return nil
}
