// Package rdbfile writes and checks Redis RDB files, the format
// redis-server loads at start and `redis-cli --rdb` saves.
//
// A Writer builds a file of one db from DUMP payloads: a payload is an
// RDB object (type byte and value) followed by the RDB version and a
// CRC-64, so an RDB entry is the payload's type byte, the key as an RDB
// string, then the payload's value, behind an optional expire opcode.
// Every type Redis can DUMP (streams and module types included) is written
// byte for byte as the server encoded it; nothing is decoded.
//
// Check reads a whole file as a stream and verifies what can be verified
// without decoding values: the magic, a version this code knows, the EOF
// opcode and the trailing CRC-64. The values themselves are checked by the
// redis-server that loads the file (sanitize-dump-payload yes).
package rdbfile

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// RDB opcodes (rdb.h).
const (
	opExpireMs = 0xfc
	opSelectDB = 0xfe
	opEOF      = 0xff
)

// Versions this package writes and accepts: RDB 5 (Redis 2.6, the first
// with a checksum) to 12 (Redis 7.4).
const (
	MinVersion = 5
	MaxVersion = 12
)

// ErrCorrupt is wrapped by every error about a malformed file or payload.
var ErrCorrupt = errors.New("corrupt RDB")

// payloadFooter is the RDB version (2 bytes) and CRC-64 (8 bytes) that end
// a DUMP payload.
const payloadFooter = 10

// SplitPayload checks a DUMP payload's footer and returns its type byte,
// its value and the RDB version it was encoded with.
func SplitPayload(p []byte) (typ byte, value []byte, version int, err error) {
	if len(p) < 1+payloadFooter {
		return 0, nil, 0, fmt.Errorf("%w: DUMP payload of %d bytes", ErrCorrupt, len(p))
	}
	body := p[:len(p)-8]
	if sum := binary.LittleEndian.Uint64(p[len(p)-8:]); sum != 0 && sum != Checksum(body) {
		return 0, nil, 0, fmt.Errorf("%w: DUMP payload checksum mismatch", ErrCorrupt)
	}
	version = int(binary.LittleEndian.Uint16(p[len(p)-payloadFooter:]))
	return p[0], p[1 : len(p)-payloadFooter], version, nil
}

// appendLength appends n in RDB's length encoding.
func appendLength(b []byte, n uint64) []byte {
	switch {
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return append(b, 0x40|byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0x80), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0x81), n)
}

// appendString appends s as a plain (unencoded) RDB string.
func appendString(b []byte, s string) []byte {
	return append(appendLength(b, uint64(len(s))), s...)
}
