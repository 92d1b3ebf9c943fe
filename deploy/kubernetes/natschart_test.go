package kubernetes

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// chartValues is the part of the NATS chart's values nats-values.yaml
// sets that the test below reads.
type chartValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				MaxSize string `json:"maxSize"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool   `json:"enabled"`
				MaxSize string `json:"maxSize"`
			} `json:"memoryStore"`
			Merge map[string]any `json:"merge"`
		} `json:"jetstream"`
		Monitor struct {
			Enabled bool `json:"enabled"`
			Port    int  `json:"port"`
		} `json:"monitor"`
		Merge map[string]any `json:"merge"`
	} `json:"config"`
	Container struct {
		Env map[string]struct {
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `json:"secretKeyRef"`
			} `json:"valueFrom"`
		} `json:"env"`
		Patch []struct {
			Op, Path string
			Value    struct {
				Name      string `json:"name"`
				MountPath string `json:"mountPath"`
			}
		} `json:"patch"`
	} `json:"container"`
	PodTemplate struct {
		Patch []struct {
			Op, Path string
			Value    struct {
				Name   string `json:"name"`
				Secret struct {
					SecretName string `json:"secretName"`
				} `json:"secret"`
			}
		} `json:"patch"`
	} `json:"podTemplate"`
}

// chartConfigDir is where the chart mounts the config it writes.
const chartConfigDir = "/etc/nats-config"

// TestNATSChartServesNatsConf: the config the NATS chart writes from
// nats-values.yaml — nats.conf included first, then the chart's own keys —
// loads in nats-server with every user of nats.conf and fsync on every
// write, from nats.conf mounted where the include points, with every
// password nats.conf reads coming from Secret pnp-nats-passwords.
//
// The chart's rendering is reproduced from the values (the include key
// "$include" sorts before the chart's keys, as the chart's docs say); the
// file included is the repository's nats.conf itself.
func TestNATSChartServesNatsConf(t *testing.T) {
	users, vars := natsUsers(t)
	raw, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v chartValues
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 || !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.Monitor.Enabled {
		t.Fatalf("want a 3-node cluster with JetStream on files and monitoring on: %+v", c)
	}
	include, _ := c.Merge["$include"].(string)
	if include == "" {
		t.Fatal("config.merge has no $include of nats.conf")
	}
	// The Secret holding nats.conf is mounted where the include points.
	var mount, secret string
	for _, p := range v.Container.Patch {
		if p.Op == "add" && p.Path == "/volumeMounts/-" {
			mount = path.Join(p.Value.MountPath, "nats.conf")
			for _, q := range v.PodTemplate.Patch {
				if q.Op == "add" && q.Path == "/spec/volumes/-" && q.Value.Name == p.Value.Name {
					secret = q.Value.Secret.SecretName
				}
			}
		}
	}
	if got := path.Join(chartConfigDir, include); got != mount || secret != "pnp-nats-conf" {
		t.Fatalf("the include reads %s; Secret %q is mounted as %s (want pnp-nats-conf there)", got, secret, mount)
	}
	for _, name := range vars {
		ref := v.Container.Env[name].ValueFrom.SecretKeyRef
		if ref.Name != "pnp-nats-passwords" || ref.Key != name {
			t.Errorf("container.env %s: %+v, want key %s of Secret pnp-nats-passwords", name, ref, name)
		}
	}
	// What the chart writes for server nats-0, in a copy of the two
	// mounts' layout.
	root := t.TempDir()
	confDir := filepath.Join(root, filepath.FromSlash(chartConfigDir))
	incPath := filepath.Join(root, filepath.FromSlash(mount))
	for _, d := range []string{confDir, filepath.Dir(incPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	natsConf, err := os.ReadFile(filepath.Join("..", "..", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(incPath, natsConf, 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(root, "data")
	var js strings.Builder
	fmt.Fprintf(&js, "  store_dir: %q\n  max_file_store: %s\n  max_memory_store: %s\n", store, c.JetStream.FileStore.MaxSize, c.JetStream.MemoryStore.MaxSize)
	for k, val := range c.JetStream.Merge {
		fmt.Fprintf(&js, "  %s: %v\n", k, val)
	}
	conf := fmt.Sprintf(`include %s;
server_name: nats-0
port: 4222
http_port: %d
cluster {
  name: nats
  port: 6222
  routes: [nats://nats-0.nats-headless:6222, nats://nats-1.nats-headless:6222, nats://nats-2.nats-headless:6222]
}
jetstream {
%s}
`, include, c.Monitor.Port, js.String())
	confPath := filepath.Join(confDir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("the chart's config does not load: %v\n%s", err, conf)
	}
	if !opts.SyncAlways {
		t.Error("sync_interval is not always: acknowledged jobs could be lost on power loss")
	}
	if opts.ServerName != "nats-0" || opts.StoreDir != store || opts.HTTPPort != c.Monitor.Port || opts.Cluster.Port != 6222 {
		t.Errorf("server name %q, store %q, monitoring %d, cluster port %d: the chart's keys must win over nats.conf's", opts.ServerName, opts.StoreDir, opts.HTTPPort, opts.Cluster.Port)
	}
	var got []string
	for _, u := range opts.Users {
		got = append(got, u.Username)
		if want := users[u.Username]; want == nil || u.Password != want.Password || u.Account.Name != want.Account.Name {
			t.Errorf("user %s differs from nats.conf's", u.Username)
		}
	}
	if len(got) != len(users) {
		slices.Sort(got)
		t.Errorf("users %v, nats.conf has %d", got, len(users))
	}
}
