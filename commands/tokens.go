package commands

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Token prefixes make a leaked token recognisable for what it is.
const (
	activationPrefix = "evat_"
	sessionPrefix    = "evs_"
)

// newToken makes a bearer token: prefix, then base64url of the id it belongs
// to and 256 random bits. Carrying the id lets the write side check the token
// from its own stream, never from a lagging read model. Only the SHA-256 hash
// of the whole token is ever stored.
func newToken(prefix string, id uuid.UUID) (token, hash string, err error) {
	buf := make([]byte, 16+32)
	copy(buf, id[:])
	if _, err := rand.Read(buf[16:]); err != nil {
		return "", "", fmt.Errorf("random token: %w", err)
	}
	token = prefix + base64.RawURLEncoding.EncodeToString(buf)
	return token, HashToken(token), nil
}

// parseToken reads the id out of a token and hashes it; ok is false for
// anything that is not a well-formed token of that kind.
func parseToken(prefix, token string) (id uuid.UUID, hash string, ok bool) {
	rest, found := strings.CutPrefix(token, prefix)
	if !found || len(rest) != base64.RawURLEncoding.EncodedLen(48) {
		return uuid.Nil, "", false
	}
	buf, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(buf) != 48 {
		return uuid.Nil, "", false
	}
	copy(id[:], buf[:16])
	return id, HashToken(token), true
}

// HashToken is the one way a token is hashed for storage: hex SHA-256.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
