package tlsfiles

import (
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ClientCredentials are the transport credentials of a gRPC client: plaintext when useTLS is false and
// o names no file nor server name, else TLS configured by Client. A handshake that fails fails the
// call (UNAVAILABLE); it never falls back to plaintext.
func ClientCredentials(useTLS bool, o Options) (credentials.TransportCredentials, error) {
	if !useTLS && o.CAFile == "" && o.CertFile == "" && o.KeyFile == "" && o.ServerName == "" {
		return insecure.NewCredentials(), nil
	}
	c, err := Client(o)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(c), nil
}
