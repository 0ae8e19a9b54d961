package transport

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// A runbox cluster's TLS is a private CA (`runbox certs init`) that signs one certificate
// per node or client (`runbox certs issue`). A certificate carries its holder's role twice:
// as a URI SAN runbox://role/ROLE and as its subject's organizational unit; the name is the
// subject's common name. The master presents a master certificate, slaves a slave
// certificate; clients may present a client certificate. Every connection is TLS 1.3.

// RoleMaster is the role of the master's certificate (clients and slaves check it).
const RoleMaster = "master"

// Files of a TLS directory. `runbox certs init` writes CAFile and CAKeyFile; `runbox
// certs issue` writes a directory per holder with CAFile, CertFile and KeyFile, which is
// what `--tls-dir` reads.
const (
	CAFile    = "ca.crt"
	CAKeyFile = "ca.key"
	CertFile  = "tls.crt"
	KeyFile   = "tls.key"
)

// CertRole returns the role a certificate carries ("" when none): its runbox://role/ URI
// SAN, or else its organizational unit.
func CertRole(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "runbox" && u.Host == "role" {
			return strings.TrimPrefix(u.Path, "/")
		}
	}
	for _, ou := range c.Subject.OrganizationalUnit {
		if ou == RoleMaster || ou == RoleSlave || ou == RoleClient {
			return ou
		}
	}
	return ""
}

// PeerCert returns the role and name of the verified certificate a TLS peer presented, or
// empty strings when it presented none (or the connection is not TLS).
func PeerCert(state *tls.ConnectionState) (role, name string) {
	if state == nil || len(state.VerifiedChains) == 0 || len(state.PeerCertificates) == 0 {
		return "", ""
	}
	c := state.PeerCertificates[0]
	return CertRole(c), c.Subject.CommonName
}

func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: no certificate in %s", caFile)
	}
	return pool, nil
}

// loadKeyPair loads a certificate and its key, refusing a key file others can read.
func loadKeyPair(certFile, keyFile, wantRole string) (tls.Certificate, error) {
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("tls: %s is readable by others (mode %v); chmod 600 it", keyFile, fi.Mode().Perm())
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: %w", err)
	}
	if role := CertRole(pair.Leaf); wantRole != "" && role != wantRole {
		return tls.Certificate{}, fmt.Errorf("tls: %s is a %q certificate, this needs a %q one (runbox certs issue --role %s)", certFile, role, wantRole, wantRole)
	}
	return pair, nil
}

// ServerTLS returns the master's TLS configuration from its directory (CAFile, CertFile,
// KeyFile, the certificate of role master): TLS 1.3 only, and client certificates verified
// against the CA when a peer presents one (a slave must; see Server's authentication).
func ServerTLS(dir string) (*tls.Config, error) {
	pool, err := loadPool(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	pair, err := loadKeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), RoleMaster)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}, nil
}

// ClientTLS returns a client's or a slave's TLS configuration: the server must present a
// master certificate signed by the CA in caFile (and valid for the dialled host). certFile
// and keyFile, when not empty, are the certificate this side presents.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		// Runs after the chain and host name are verified: a slave's or a client's
		// certificate from the same CA cannot pose as the master.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if role := CertRole(cs.PeerCertificates[0]); role != RoleMaster {
				return fmt.Errorf("%w: the server presented a %q certificate", errNotMaster, role)
			}
			return nil
		},
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("tls: a client certificate needs both its certificate and its key file")
		}
		pair, err := loadKeyPair(certFile, keyFile, "")
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// ClientTLSDir is ClientTLS from a directory written by `runbox certs issue`: CAFile, and
// CertFile and KeyFile when present (a slave without a certificate joins with a token).
func ClientTLSDir(dir string) (*tls.Config, error) {
	cert, key := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if _, err := os.Stat(cert); errors.Is(err, fs.ErrNotExist) {
		cert, key = "", ""
	}
	return ClientTLS(filepath.Join(dir, CAFile), cert, key)
}

// withServerName returns cfg with ServerName set to addr's host when it has none, so the
// master's certificate is checked against the address dialled.
func withServerName(cfg *tls.Config, addr string) *tls.Config {
	if cfg.ServerName != "" {
		return cfg
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	cfg = cfg.Clone()
	cfg.ServerName = host
	return cfg
}

// tlsRecordHandshake is the first byte of a TLS connection (a handshake record).
const tlsRecordHandshake = 0x16

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// errTLSRequired is the refusal a plaintext client gets from a TLS server.
var errTLSRequired = fmt.Errorf("%w: this server requires TLS: connect with --tls-ca FILE (the cluster's CA certificate; see docs/security.md)", ErrUnauthorized)

// secure looks at a new connection's first byte and returns the connection to speak the
// protocol on, with its TLS state (nil in plaintext). A TLS server answers a plaintext
// client (one that opens with the preamble) with a plaintext error frame saying TLS is
// required; a plaintext server answers a TLS client with an error frame its TLS stack
// reports as "not a TLS handshake". The connection's deadline is already set.
func (s *Server) secure(conn net.Conn) (net.Conn, *tls.ConnectionState, error) {
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		return nil, nil, err
	}
	pc := &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(first[:]), conn)}
	switch {
	case s.cfg.TLS == nil && first[0] == tlsRecordHandshake:
		// Read the client's hello record before answering, so closing does not reset the
		// connection under the answer.
		var hdr [5]byte
		if _, err := io.ReadFull(pc, hdr[:]); err == nil {
			io.CopyN(io.Discard, pc, int64(binary.BigEndian.Uint16(hdr[3:5])))
		}
		err := fmt.Errorf("%w: a TLS client on a plaintext port: this server does not use TLS (it runs without --tls-dir)", ErrProtocol)
		writeError(conn, err)
		s.audit.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", "tls client on a plaintext port")
		return nil, nil, err
	case s.cfg.TLS == nil:
		return pc, nil, nil
	case first[0] == Preamble[0]:
		// A plaintext client: read its preamble and hello (not used) before answering.
		var rest [len(Preamble) - 1]byte
		if _, err := io.ReadFull(conn, rest[:]); err == nil {
			ReadFrame(conn, MaxHelloFrame)
		}
		writeError(conn, errTLSRequired)
		s.audit.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", "plaintext client on a TLS port")
		return nil, nil, errTLSRequired
	}
	tc := tls.Server(pc, s.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		s.audit.Warn("connection refused", "remote", conn.RemoteAddr().String(), "reason", "tls handshake: "+err.Error())
		return nil, nil, err
	}
	state := tc.ConnectionState()
	return tc, &state, nil
}

// errNotMaster: the server's certificate is valid but not a master's.
var errNotMaster = errors.New("not a master certificate")

// dialTLSError explains a failed TLS handshake with a server.
func dialTLSError(addr string, err error) error {
	var verr *tls.CertificateVerificationError
	var rerr tls.RecordHeaderError
	switch {
	case errors.As(err, &verr):
		return fmt.Errorf("%w: %s: the server's certificate was refused: %v (is --tls-ca the cluster's CA, and the address one the master's certificate names?)", ErrUnauthorized, addr, verr.Err)
	case errors.Is(err, errNotMaster):
		return fmt.Errorf("%w: %s: %v", ErrUnauthorized, addr, err)
	case errors.As(err, &rerr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w %s: the server does not speak TLS (a master started without --tls-dir?); connect without --tls-ca: %v", ErrConnect, addr, err)
	case isRemoteAlert(err):
		return fmt.Errorf("%w: %s: the server refused this TLS connection: %v", ErrUnauthorized, addr, err)
	}
	return fmt.Errorf("%w %s: tls: %v", ErrConnect, addr, err)
}

// isRemoteAlert reports whether err is a TLS alert the peer sent (a refused certificate
// arrives so in TLS 1.3: after the client's side of the handshake is done).
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// handshakeReadError explains a failure to read the server's answer to the hello.
func handshakeReadError(conn net.Conn, typ byte, err error) error {
	if _, ok := conn.(*tls.Conn); ok && isRemoteAlert(err) {
		return fmt.Errorf("%w: the server refused this client's certificate: %v (was it issued by the cluster's CA, and is it still valid?)", ErrUnauthorized, err)
	}
	if _, ok := conn.(*tls.Conn); !ok && slices.Contains([]byte{0x15, tlsRecordHandshake}, typ) {
		return fmt.Errorf("%w: the server speaks TLS: connect with --tls-ca FILE (the cluster's CA certificate)", ErrConnect)
	}
	return nil
}
