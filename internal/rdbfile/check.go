package rdbfile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// Info is what Check learnt of a file.
type Info struct {
	Version  int
	Size     int64
	Checksum uint64 // 0: the file was saved with rdbchecksum no
}

// Check reads all of r, an RDB file, and verifies its magic, its version
// and its trailing checksum, holding only a small window in memory. A
// file saved with rdbchecksum no (a zero checksum) passes when it ends
// with the EOF opcode, as redis-server accepts it.
func Check(r io.Reader) (Info, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var head [9]byte
	if n, err := io.ReadFull(br, head[:]); err != nil {
		return Info{Size: int64(n)}, fmt.Errorf("%w: %d bytes, shorter than an RDB header", ErrCorrupt, n)
	}
	if string(head[:5]) != "REDIS" {
		return Info{Size: 9}, fmt.Errorf("%w: not an RDB file (no REDIS magic)", ErrCorrupt)
	}
	v, err := strconv.Atoi(string(head[5:]))
	if err != nil || v < 1 {
		return Info{Size: 9}, fmt.Errorf("%w: bad version field %q", ErrCorrupt, head[5:])
	}
	info := Info{Version: v, Size: 9}
	if v < MinVersion || v > MaxVersion {
		return info, fmt.Errorf("%w: RDB version %d is not supported (%d to %d are)", ErrCorrupt, v, MinVersion, MaxVersion)
	}
	crc := Checksum(head[:])
	// The last 8 bytes are the checksum, not part of what it covers: hold
	// them back until more data shows they are not the end.
	var tail []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			info.Size += int64(n)
			tail = append(tail, buf[:n]...)
			if k := len(tail) - 9; k > 0 {
				crc = crc64Update(crc, tail[:k])
				tail = append(tail[:0], tail[k:]...)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return info, fmt.Errorf("read RDB: %w", err)
		}
	}
	if len(tail) < 9 || tail[0] != opEOF {
		return info, fmt.Errorf("%w: truncated (no EOF opcode before the checksum)", ErrCorrupt)
	}
	crc = crc64Update(crc, tail[:1])
	info.Checksum = binary.LittleEndian.Uint64(tail[1:])
	if info.Checksum != 0 && info.Checksum != crc {
		return info, fmt.Errorf("%w: checksum mismatch (truncated or altered)", ErrCorrupt)
	}
	return info, nil
}
