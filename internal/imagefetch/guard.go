package imagefetch

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"code.dny.dev/ssrf"
)

// blockedError says why a destination may not be dialled. Its text is safe
// to show a caller: it names the class of address, never the address a host
// name resolved to.
type blockedError struct{ reason string }

func (e *blockedError) Error() string { return e.reason }

// metadataV6 is the IPv6 instance metadata address of AWS (IPv4 metadata
// endpoints all sit in 169.254.0.0/16, which is link-local).
var metadataV6 = netip.MustParseAddr("fd00:ec2::254")

// policy decides which addresses may be dialled. It is immutable after
// newPolicy and safe for concurrent use.
type policy struct {
	guardian  *ssrf.Guardian
	prefixes  []netip.Prefix  // operator allowlist: any port
	hostPorts map[string]bool // operator allowlist: "host:port", host lower case, IPs canonical
	ports     map[uint16]bool // ports open to addresses not allowlisted
	portList  string          // the same, for messages
}

func newPolicy(allow []string, ports []uint16) (*policy, error) {
	p := &policy{
		// The guardian classifies addresses (IANA special-purpose
		// registries); ports and networks are checked here, after the
		// address, so a message names the more important reason.
		guardian:  ssrf.New(ssrf.WithAnyPort(), ssrf.WithAnyNetwork()),
		hostPorts: map[string]bool{},
		ports:     map[uint16]bool{},
	}
	var ps []string
	for _, port := range ports {
		p.ports[port] = true
		ps = append(ps, strconv.Itoa(int(port)))
	}
	p.portList = strings.Join(ps, ", ")
	var errs []error
	for _, e := range allow {
		if err := p.add(e); err != nil {
			errs = append(errs, err)
		}
	}
	return p, errors.Join(errs...)
}

// add parses one allowlist entry: a CIDR ("10.0.0.0/8"), a single IP
// ("10.1.2.3", "fd00::1"), both allowing every port, or a host:port
// ("images.internal:8080", "127.0.0.1:9000", "[::1]:9000").
func (p *policy) add(entry string) error {
	e := strings.TrimSpace(entry)
	if e == "" {
		return fmt.Errorf("allow entry %q is empty", entry)
	}
	if pfx, err := netip.ParsePrefix(e); err == nil {
		if err := allowable(pfx.Addr()); err != nil {
			return fmt.Errorf("allow entry %q: %w", entry, err)
		}
		p.prefixes = append(p.prefixes, pfx.Masked())
		return nil
	}
	if ip, err := netip.ParseAddr(e); err == nil {
		if err := allowable(ip); err != nil {
			return fmt.Errorf("allow entry %q: %w", entry, err)
		}
		p.prefixes = append(p.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
		return nil
	}
	host, port, err := net.SplitHostPort(e)
	if err != nil {
		return fmt.Errorf("allow entry %q: want a CIDR, an IP address or host:port", entry)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("allow entry %q: bad port %q", entry, port)
	}
	if host == "" {
		return fmt.Errorf("allow entry %q: host is empty", entry)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := allowable(ip); err != nil {
			return fmt.Errorf("allow entry %q: %w", entry, err)
		}
	}
	p.hostPorts[hostKey(host, port)] = true
	return nil
}

// allowable refuses allowlist entries for addresses that stay blocked
// whatever the operator says.
func allowable(ip netip.Addr) error {
	if reason := alwaysBlocked(ip); reason != "" {
		return fmt.Errorf("%s addresses cannot be allowed", reason)
	}
	return nil
}

// hostKey normalises a URL host and port for allowlist lookups: host names
// lower case without a trailing dot, IP addresses in canonical form.
func hostKey(host, port string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	}
	return net.JoinHostPort(host, port)
}

// trusted reports whether the operator allowlisted host:port as written in
// the URL, before any name resolution.
func (p *policy) trusted(host, port string) bool {
	return p.hostPorts[hostKey(host, port)]
}

// check is the dialer's Control function body: it sees every address the
// dialer is about to connect to, after DNS resolution, on every redirect
// hop, so a host name that resolves (or re-resolves) to a private address
// is caught here. trusted is true when the URL's host:port is allowlisted.
func (p *policy) check(network, address string, trusted bool) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &blockedError{reason: "unparseable destination address"}
	}
	ip := ap.Addr().Unmap()
	if reason := alwaysBlocked(ip); reason != "" {
		return &blockedError{reason: reason + " addresses may not be fetched"}
	}
	if trusted {
		return nil
	}
	for _, pfx := range p.prefixes {
		if pfx.Contains(ip) {
			return nil
		}
	}
	if network != "tcp4" && network != "tcp6" {
		return &blockedError{reason: "network " + network + " may not be used"}
	}
	if err := p.guardian.SafeAddr(ip); err != nil {
		return &blockedError{reason: addressClass(ip) + " addresses may not be fetched"}
	}
	if !p.ports[ap.Port()] {
		return &blockedError{reason: fmt.Sprintf("port %d may not be fetched (allowed: %s)", ap.Port(), p.portList)}
	}
	return nil
}

// checkLiteral applies the address rules to an IP literal in a URL before
// any connection is attempted, so the caller gets the same answer without a
// dial. IPv4-mapped IPv6 literals are refused outright: they have no
// legitimate use in an image URL and are a classic way around filters.
func (p *policy) checkLiteral(host, port string) error {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: checked at dial time
	}
	if ip.Zone() != "" {
		return &blockedError{reason: "IPv6 zones may not be used"}
	}
	if ip.Is4In6() {
		return &blockedError{reason: "IPv4-mapped IPv6 addresses may not be fetched"}
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return &blockedError{reason: "bad port"}
	}
	network := "tcp4"
	if ip.Is6() {
		network = "tcp6"
	}
	return p.check(network, netip.AddrPortFrom(ip, uint16(n)).String(), p.trusted(host, port))
}

// alwaysBlocked names the class of ip when no allowlist may open it:
// link-local (where cloud metadata services live), unspecified, multicast
// and broadcast addresses.
func alwaysBlocked(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip == metadataV6:
		return "cloud metadata"
	case ip.IsLinkLocalUnicast():
		return "link-local (including cloud metadata)"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	}
	return ""
}

// addressClass names the kind of a non-public address for messages.
func addressClass(ip netip.Addr) string {
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "private"
	case ip.Is4() && netip.MustParsePrefix("100.64.0.0/10").Contains(ip):
		return "shared (carrier-grade NAT)"
	case ip.Is6() && netip.MustParsePrefix("64:ff9b::/96").Contains(ip):
		return "NAT64"
	default:
		return "special-purpose (non-public)"
	}
}

// controlFunc adapts check to net.Dialer.Control.
func (p *policy) controlFunc(trusted bool) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		return p.check(network, address, trusted)
	}
}
