package main

import (
	"crypto/rand"
	"encoding/base64"
)

// randomToken is 32 random bytes, base64url: a 256-bit secret.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
