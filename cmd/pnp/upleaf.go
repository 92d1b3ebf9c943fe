package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/pnpworker/pnpworker/internal/embedded"
)

// upTopologyFlags are pnp up's flags for a hub that leaf nodes join: its
// JetStream domain and where, with which user, it accepts leaf nodes.
type upTopologyFlags struct{ domain, leafListen, leafUser, leafPassword string }

func (f *upTopologyFlags) register(fs *flagSet) {
	fs.StringVar(&f.domain, "js-domain", env("NATS_JS_DOMAIN", ""), "JetStream domain of the embedded server: clients of a leaf node connected to it reach its streams with --js-domain NAME (env NATS_JS_DOMAIN)")
	fs.StringVar(&f.leafListen, "leaf-listen", env("PNP_LEAF_LISTEN", ""), "also accept leaf node connections on this address, e.g. 0.0.0.0:7422; needs --leaf-password; default none (env PNP_LEAF_LISTEN)")
	fs.StringVar(&f.leafUser, "leaf-user", env("PNP_LEAF_USER", "leaf"), "user every leaf node connection must authenticate as (env PNP_LEAF_USER)")
	fs.StringVar(&f.leafPassword, "leaf-password", env("PNP_LEAF_PASSWORD", ""), "password of --leaf-user; a leaf node shares this server's jobs and buckets, so it is required with --leaf-listen (env PNP_LEAF_PASSWORD)")
}

// leaf returns the embedded server's leaf settings, nil without
// --leaf-listen.
func (f *upTopologyFlags) leaf() (*embedded.Leaf, error) {
	if err := (&natsFlags{jsDomain: f.domain}).check(); err != nil {
		return nil, err
	}
	if f.leafListen == "" {
		return nil, nil
	}
	host, port, err := splitListen("--leaf-listen", f.leafListen)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		port = -1
	}
	if f.leafUser == "" || f.leafPassword == "" {
		return nil, fmt.Errorf("%w: --leaf-listen needs --leaf-user and --leaf-password (PNP_LEAF_PASSWORD): a leaf node shares this server's jobs and buckets", errUsage)
	}
	return &embedded.Leaf{Host: host, Port: port, User: f.leafUser, Password: f.leafPassword}, nil
}

// leafURL is the URL a leaf node's remote names, password hidden; "" without
// --leaf-listen.
func (f *upTopologyFlags) leafURL(srv *embedded.Server) string {
	if f.leafListen == "" {
		return ""
	}
	// The server's view: with port 0 it has picked one.
	v, err := srv.Varz(nil)
	if err != nil || v.LeafNode.Port == 0 {
		return ""
	}
	u := url.URL{Scheme: "nats-leaf", User: url.UserPassword(f.leafUser, "PASSWORD"), Host: net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port))}
	return u.String()
}

// splitListen parses a host:port flag value; port 0 is returned as is.
func splitListen(flag, v string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: want host:port", errUsage, flag, v)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: %s %q: bad port", errUsage, flag, v)
	}
	return host, port, nil
}
