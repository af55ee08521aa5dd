package rdbfile

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Writer writes one db's keys as an RDB file. The header is written with
// the first key, in the version of its payload (a file of no keys gets
// MinVersion); Close writes the EOF opcode and the checksum. A Writer is
// not safe for concurrent use.
type Writer struct {
	w       *bufio.Writer
	crc     uint64
	version int
	keys    int64
	n       int64
	buf     []byte
	err     error
	closed  bool
}

// NewWriter returns a Writer onto w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 256<<10)}
}

// Keys is the number of keys written so far.
func (w *Writer) Keys() int64 { return w.keys }

// Bytes is the number of bytes written so far (all of the file once
// Close returned).
func (w *Writer) Bytes() int64 { return w.n }

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc64Update(w.crc, p)
	var n int
	n, w.err = w.w.Write(p)
	w.n += int64(n)
}

func (w *Writer) header(version int) {
	w.version = version
	w.write(fmt.Appendf(nil, "REDIS%04d", version))
	w.write([]byte{opSelectDB, 0})
}

// Add writes key with its DUMP payload and, when expireAtMs > 0, its
// absolute expiry in Unix milliseconds (PEXPIRETIME).
func (w *Writer) Add(key string, dump []byte, expireAtMs int64) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("rdbfile: Add after Close")
	}
	typ, value, version, err := SplitPayload(dump)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	switch {
	case version < MinVersion || version > MaxVersion:
		return fmt.Errorf("%w: key %q: DUMP payload of RDB version %d (this build writes %d to %d)", ErrCorrupt, key, version, MinVersion, MaxVersion)
	case w.version == 0:
		w.header(version)
	case version > w.version:
		return fmt.Errorf("%w: key %q: DUMP payload of RDB version %d in a file of version %d", ErrCorrupt, key, version, w.version)
	}
	b := w.buf[:0]
	if expireAtMs > 0 {
		b = binary.LittleEndian.AppendUint64(append(b, opExpireMs), uint64(expireAtMs))
	}
	b = appendString(append(b, typ), key)
	w.buf = b
	w.write(b)
	w.write(value)
	w.keys++
	return w.err
}

// Close ends the file (EOF opcode and CRC-64) and flushes it; it does not
// close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if w.version == 0 {
		w.header(MinVersion)
	}
	w.write([]byte{opEOF})
	if w.err == nil {
		var n int
		n, w.err = w.w.Write(binary.LittleEndian.AppendUint64(nil, w.crc))
		w.n += int64(n)
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}
