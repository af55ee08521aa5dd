package proxy

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/tidwall/redcon"
)

// This file reads tenants' requests. Requests that arrive as RESP multibulk
// are forwarded to the backends as the very bytes the tenant sent, so the
// parser accepts only canonical framing ("*<n>\r\n", "$<n>\r\n", data, "\r\n",
// numbers as Redis's string2ll reads them): whatever it accepts, Redis frames
// identically, and no tenant can smuggle a second command inside a first one.
// Inline requests are re-encoded before they are forwarded.

// command is one parsed request. args point into the reader's buffer and
// stay valid until the reader is compacted (after the batch is answered).
type command struct {
	args [][]byte
	// raw is the request exactly as received when it was a multibulk, nil
	// for an inline request.
	raw []byte
}

// limits bound what one request may make the proxy hold in memory.
type limits struct {
	maxMultibulk int64 // elements in one request
	maxBulk      int64 // bytes of one argument
	maxInline    int   // bytes of one inline request
}

var errIncomplete = errors.New("incomplete request")

// reqReader holds a connection's unread input and parses requests from it
// without copying. A request that does not fit yet is parsed incrementally:
// the state of the partial request is kept as offsets from its start, so
// growing or moving the buffer does not invalidate it and no request is
// rescanned from the beginning after every read.
type reqReader struct {
	buf []byte
	r   int // start of unparsed data (and of the partial request)
	w   int // end of data

	// state of the partial multibulk request at buf[r:]
	pPos   int   // offset of the next byte to parse, from r
	pArgc  int64 // announced element count, 0 when the header is not read
	pOffs  []int // start,end offsets (from r) of the elements read so far
	pNeed  int   // bytes (from r) the next element needs before it can be parsed
	argBuf [][]byte
}

func newReqReader(size int) *reqReader {
	return &reqReader{buf: make([]byte, size)}
}

// space returns the free tail of the buffer, growing or compacting it so
// that at least min bytes are free. It is called only between batches, when
// no parsed command points into the buffer.
func (rd *reqReader) space(min int) []byte {
	if rd.r > 0 && (rd.r == rd.w || len(rd.buf)-rd.w < min) {
		n := copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.r, rd.w = 0, n
	}
	if len(rd.buf)-rd.w < min {
		need := rd.w + min
		size := 2 * len(rd.buf)
		if size < need {
			size = need
		}
		nb := make([]byte, size)
		copy(nb, rd.buf[:rd.w])
		rd.buf = nb
	}
	return rd.buf[rd.w:]
}

// readSize is how much free space the next read should have: a normal
// chunk, or more when a large bulk is known to be coming. The buffer at most
// doubles per read, so a header announcing a huge bulk costs memory only as
// the data really arrives.
func (rd *reqReader) readSize(chunk int) int {
	if rd.pNeed > 0 {
		n := rd.r + rd.pNeed - rd.w
		if n > len(rd.buf) {
			n = len(rd.buf)
		}
		if n > chunk {
			return n
		}
	}
	return chunk
}

// shrink drops a buffer that grew for one large request once it is unused.
func (rd *reqReader) shrink(size int) {
	if rd.r == rd.w && len(rd.buf) > 4*size {
		rd.buf = make([]byte, size)
		rd.r, rd.w = 0, 0
	}
}

func (rd *reqReader) buffered() int { return rd.w - rd.r }

// next parses one request. It returns errIncomplete when more input is
// needed, a protocolError when the input is bad (the connection must be
// closed after answering it), and ok=false with no error for an empty
// request that Redis ignores. The returned command's args use argBuf, which
// the caller resets per batch.
func (rd *reqReader) next(lim *limits) (cmd command, ok bool, err error) {
	if rd.r == rd.w {
		return cmd, false, errIncomplete
	}
	if rd.buf[rd.r] != '*' {
		return rd.inline(lim)
	}
	b := rd.buf[rd.r:rd.w]
	if rd.pArgc == 0 {
		n, end, err := parseLine(b, 1, '*', lim.maxInline)
		if err != nil {
			if err == errIncomplete {
				return cmd, false, err
			}
			return cmd, false, protoErr("invalid multibulk length")
		}
		if n > lim.maxMultibulk {
			return cmd, false, protoErr("invalid multibulk length")
		}
		if n <= 0 {
			rd.r += end
			return cmd, false, nil
		}
		rd.pArgc, rd.pPos, rd.pOffs = n, end, rd.pOffs[:0]
	}
	for int64(len(rd.pOffs)/2) < rd.pArgc {
		if rd.pNeed > len(b) {
			return cmd, false, errIncomplete
		}
		if rd.pPos >= len(b) {
			return cmd, false, errIncomplete
		}
		if b[rd.pPos] != '$' {
			return cmd, false, protoErr(fmt.Sprintf("expected '$', got '%c'", b[rd.pPos]))
		}
		n, end, err := parseLine(b, rd.pPos+1, '$', lim.maxInline)
		if err != nil {
			if err == errIncomplete {
				return cmd, false, err
			}
			return cmd, false, protoErr("invalid bulk length")
		}
		if n < 0 || n > lim.maxBulk {
			return cmd, false, protoErr("invalid bulk length")
		}
		data := end
		stop := data + int(n)
		if stop+2 > len(b) {
			rd.pNeed = stop + 2
			return cmd, false, errIncomplete
		}
		if b[stop] != '\r' || b[stop+1] != '\n' {
			return cmd, false, protoErr("expected CRLF after bulk data")
		}
		rd.pOffs = append(rd.pOffs, data, stop)
		rd.pPos, rd.pNeed = stop+2, 0
	}
	start := len(rd.argBuf)
	for i := 0; i < len(rd.pOffs); i += 2 {
		rd.argBuf = append(rd.argBuf, b[rd.pOffs[i]:rd.pOffs[i+1]:rd.pOffs[i+1]])
	}
	cmd.args = rd.argBuf[start:len(rd.argBuf):len(rd.argBuf)]
	cmd.raw = b[:rd.pPos:rd.pPos]
	rd.r += rd.pPos
	rd.pArgc, rd.pPos, rd.pNeed = 0, 0, 0
	if len(rd.pOffs) > 4096 {
		rd.pOffs = nil
	}
	return cmd, true, nil
}

// parseLine reads "<int>\r\n" starting at b[from] (after the type byte) the
// way Redis's string2ll does: optional '-', no '+', no leading zeros, no
// spaces. It returns the number and the offset after the line.
func parseLine(b []byte, from int, _ byte, maxLine int) (int64, int, error) {
	i := bytes.IndexByte(b[from:], '\r')
	if i < 0 {
		if len(b)-from > maxLine || len(b)-from > 32 {
			return 0, 0, protoErr("too big count string")
		}
		return 0, 0, errIncomplete
	}
	end := from + i
	if end+1 >= len(b) {
		return 0, 0, errIncomplete
	}
	if b[end+1] != '\n' {
		return 0, 0, protoErr("expected CRLF")
	}
	n, ok := atoi(b[from:end])
	if !ok {
		return 0, 0, protoErr("invalid number")
	}
	return n, end + 2, nil
}

// atoi parses a decimal int64 exactly as Redis's string2ll accepts it.
func atoi(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	neg := false
	if b[0] == '-' {
		neg = true
		b = b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	if len(b) == 1 && b[0] == '0' {
		return 0, !neg
	}
	if b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<63)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// inline parses a telnet-style request ("PING\r\n", `SET k "a b"`).
func (rd *reqReader) inline(lim *limits) (command, bool, error) {
	b := rd.buf[rd.r:rd.w]
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) > lim.maxInline {
			return command{}, false, protoErr("too big inline request")
		}
		return command{}, false, errIncomplete
	}
	if i > lim.maxInline {
		return command{}, false, protoErr("too big inline request")
	}
	line := b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	start := len(rd.argBuf)
	args, err := splitArgs(line, rd.argBuf)
	if err != nil {
		return command{}, false, err
	}
	rd.argBuf = args
	rd.r += i + 1
	if len(args) == start {
		return command{}, false, nil
	}
	if int64(len(args)-start) > lim.maxMultibulk {
		return command{}, false, protoErr("invalid multibulk length")
	}
	return command{args: args[start:len(args):len(args)]}, true, nil
}

// splitArgs splits an inline request like Redis's sdssplitargs: spaces
// separate arguments, "double quotes" take \n \r \t \b \a \\ \" and \xHH
// escapes, 'single quotes' take \'. Unescaped arguments alias line.
func splitArgs(line []byte, out [][]byte) ([][]byte, error) {
	i := 0
	for {
		for i < len(line) && isSpace(line[i]) {
			i++
		}
		if i >= len(line) {
			return out, nil
		}
		switch line[i] {
		case '"':
			var arg []byte
			i++
			for {
				if i >= len(line) {
					return nil, protoErr("unbalanced quotes in request")
				}
				c := line[i]
				if c == '\\' && i+3 < len(line) && line[i+1] == 'x' && isHex(line[i+2]) && isHex(line[i+3]) {
					arg = append(arg, hexVal(line[i+2])<<4|hexVal(line[i+3]))
					i += 4
					continue
				}
				if c == '\\' && i+1 < len(line) {
					i++
					switch line[i] {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					default:
						c = line[i]
					}
					arg = append(arg, c)
					i++
					continue
				}
				if c == '"' {
					i++
					if i < len(line) && !isSpace(line[i]) {
						return nil, protoErr("unbalanced quotes in request")
					}
					break
				}
				arg = append(arg, c)
				i++
			}
			if arg == nil {
				arg = []byte{}
			}
			out = append(out, arg)
		case '\'':
			var arg []byte
			i++
			for {
				if i >= len(line) {
					return nil, protoErr("unbalanced quotes in request")
				}
				c := line[i]
				if c == '\\' && i+1 < len(line) && line[i+1] == '\'' {
					arg = append(arg, '\'')
					i += 2
					continue
				}
				if c == '\'' {
					i++
					if i < len(line) && !isSpace(line[i]) {
						return nil, protoErr("unbalanced quotes in request")
					}
					break
				}
				arg = append(arg, c)
				i++
			}
			if arg == nil {
				arg = []byte{}
			}
			out = append(out, arg)
		default:
			j := i
			for j < len(line) && !isSpace(line[j]) {
				j++
			}
			out = append(out, line[i:j:j])
			i = j
		}
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == '\v' || c == '\f'
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// The reply writers are redcon's: appendCommand and appendCommandStr
// encode commands for the backends with them too.

// appendCommand encodes args as a RESP multibulk.
func appendCommand(b []byte, args ...[]byte) []byte {
	b = redcon.AppendArray(b, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}

// appendCommandStr is appendCommand for string arguments.
func appendCommandStr(b []byte, args ...string) []byte {
	b = redcon.AppendArray(b, len(args))
	for _, a := range args {
		b = redcon.AppendBulkString(b, a)
	}
	return b
}

// appendNullArray is RESP2's null multibulk, which redcon does not write.
func appendNullArray(b []byte) []byte { return append(b, "*-1\r\n"...) }

var (
	replyOK     = []byte("+OK\r\n")
	replyQueued = []byte("+QUEUED\r\n")
	replyPong   = []byte("+PONG\r\n")
)
