package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"

	"github.com/tidwall/redcon"
)

// errBadReply: a backend sent something that is not RESP2.
var errBadReply = errors.New("malformed reply from backend")

// replyReader reads whole RESP2 replies from a backend as raw bytes, without
// decoding them: the proxy passes them to tenants unchanged. Large replies
// (KEYS over a big db) are scanned incrementally across reads.
type replyReader struct {
	in  *sockIn
	buf []byte
	r   int
	w   int

	// incremental scan of the reply at buf[r:]
	pos   int     // offset from r of the next element to scan
	stack []int64 // elements still missing at each array level
	need  int     // bytes (from r) needed before scanning can go on
}

func newReplyReader(nc net.Conn, size int) *replyReader {
	return &replyReader{in: newSockIn(nc), buf: make([]byte, size)}
}

// next returns the next complete reply. The slice is valid until the next
// call. It blocks on the connection, or in raw mode (sockIn) returns
// errWouldBlock when the socket has no more for now.
func (rr *replyReader) next() ([]byte, error) {
	for {
		if end, ok, err := rr.scan(); err != nil {
			return nil, err
		} else if ok {
			out := rr.buf[rr.r : rr.r+end]
			rr.r += end
			rr.pos, rr.need, rr.stack = 0, 0, rr.stack[:0]
			return out, nil
		}
		if err := rr.fill(); err != nil {
			return nil, err
		}
	}
}

// buffered reports whether a complete or partial reply is already buffered.
func (rr *replyReader) buffered() bool { return rr.r < rr.w }

func (rr *replyReader) fill() error {
	if rr.r == rr.w {
		rr.r, rr.w = 0, 0
		if len(rr.buf) > 1<<20 {
			rr.buf = make([]byte, 16<<10)
		}
	}
	min := 4096
	if rr.need > 0 && rr.r+rr.need-rr.w > min {
		min = rr.r + rr.need - rr.w
	}
	if len(rr.buf)-rr.w < min {
		if rr.r > 0 {
			n := copy(rr.buf, rr.buf[rr.r:rr.w])
			rr.r, rr.w = 0, n
		}
		if len(rr.buf)-rr.w < min {
			size := 2 * len(rr.buf)
			if size < rr.w+min {
				size = rr.w + min
			}
			nb := make([]byte, size)
			copy(nb, rr.buf[:rr.w])
			rr.buf = nb
		}
	}
	n, err := rr.in.read(rr.buf[rr.w:])
	rr.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// scan advances the incremental scan of buf[r:w]. It returns the length of
// the reply once it is complete.
func (rr *replyReader) scan() (int, bool, error) {
	b := rr.buf[rr.r:rr.w]
	for {
		if rr.need > len(b) || rr.pos >= len(b) {
			return 0, false, nil
		}
		i := bytes.IndexByte(b[rr.pos:], '\n')
		if i < 0 {
			return 0, false, nil
		}
		lineEnd := rr.pos + i + 1 // after '\n'
		if i < 1 || b[lineEnd-2] != '\r' {
			return 0, false, errBadReply
		}
		t := b[rr.pos]
		next := lineEnd
		switch t {
		case '+', '-', ':':
		case '$':
			n, ok := atoi(b[rr.pos+1 : lineEnd-2])
			if !ok || n < -1 {
				return 0, false, errBadReply
			}
			if n >= 0 {
				next = lineEnd + int(n) + 2
				if next > len(b) {
					rr.need = next
					return 0, false, nil
				}
			}
		case '*':
			n, ok := atoi(b[rr.pos+1 : lineEnd-2])
			if !ok || n < -1 {
				return 0, false, errBadReply
			}
			if n > 0 {
				rr.pos = next
				rr.stack = append(rr.stack, n)
				continue
			}
		default:
			return 0, false, errBadReply
		}
		rr.pos, rr.need = next, 0
		// one element done: pop finished arrays
		for len(rr.stack) > 0 {
			rr.stack[len(rr.stack)-1]--
			if rr.stack[len(rr.stack)-1] > 0 {
				break
			}
			rr.stack = rr.stack[:len(rr.stack)-1]
		}
		if len(rr.stack) == 0 {
			return rr.pos, true, nil
		}
	}
}

// value is a decoded RESP2 reply, for the few replies the proxy rewrites
// (pub/sub channel names) or inspects (WAIT counts).
type value struct {
	t     byte // '+', '-', ':', '$', '*'
	str   []byte
	num   int64
	null  bool
	elems []value
}

// parseValue decodes one complete reply (as returned by replyReader.next).
func parseValue(b []byte) (value, []byte, error) {
	i := bytes.IndexByte(b, '\n')
	if i < 2 || b[i-1] != '\r' {
		return value{}, nil, errBadReply
	}
	line, rest := b[1:i-1], b[i+1:]
	v := value{t: b[0]}
	switch b[0] {
	case '+', '-':
		v.str = line
	case ':':
		n, ok := atoi(line)
		if !ok {
			return v, nil, errBadReply
		}
		v.num = n
	case '$':
		n, ok := atoi(line)
		if !ok || n < -1 {
			return v, nil, errBadReply
		}
		if n == -1 {
			v.null = true
			break
		}
		if int64(len(rest)) < n+2 {
			return v, nil, errBadReply
		}
		v.str, rest = rest[:n], rest[n+2:]
	case '*':
		n, ok := atoi(line)
		if !ok || n < -1 {
			return v, nil, errBadReply
		}
		if n == -1 {
			v.null = true
			break
		}
		for k := int64(0); k < n; k++ {
			var e value
			var err error
			e, rest, err = parseValue(rest)
			if err != nil {
				return v, nil, err
			}
			v.elems = append(v.elems, e)
		}
	default:
		return v, nil, errBadReply
	}
	return v, rest, nil
}

// appendValue encodes v.
func appendValue(b []byte, v value) []byte {
	switch v.t {
	case '+', '-':
		b = append(b, v.t)
		b = append(b, v.str...)
		return append(b, '\r', '\n')
	case ':':
		return redcon.AppendInt(b, v.num)
	case '$':
		if v.null {
			return redcon.AppendNull(b)
		}
		return redcon.AppendBulk(b, v.str)
	default:
		if v.null {
			return appendNullArray(b)
		}
		b = redcon.AppendArray(b, len(v.elems))
		for _, e := range v.elems {
			b = appendValue(b, e)
		}
		return b
	}
}

// isErrorReply reports whether a raw reply is an error.
func isErrorReply(raw []byte) bool { return len(raw) > 0 && raw[0] == '-' }

// replyInt reads a raw ":<n>\r\n" reply.
func replyInt(raw []byte) (int64, bool) {
	if len(raw) < 4 || raw[0] != ':' {
		return 0, false
	}
	return atoi(raw[1 : len(raw)-2])
}
