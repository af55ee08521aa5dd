package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

var testLimits = limits{maxMultibulk: 1024 * 1024, maxBulk: 512 << 20, maxInline: 64 << 10}

// parseAll feeds input to a reqReader in chunks of size step and returns
// the commands (as "a|b|c") and the first error.
func parseAll(input string, step int, lim *limits) ([]string, error) {
	return parseChunks(input, step, lim, true)
}

func parseChunks(input string, step int, lim *limits, checkRaw bool) ([]string, error) {
	rd := newReqReader(16)
	var out []string
	for off := 0; ; {
		for {
			cmd, ok, err := rd.next(lim)
			if err == errIncomplete {
				break
			}
			if err != nil {
				return out, err
			}
			if !ok {
				continue
			}
			parts := make([]string, len(cmd.args))
			for i, a := range cmd.args {
				parts[i] = string(a)
			}
			out = append(out, strings.Join(parts, "|"))
			if cmd.raw != nil && checkRaw {
				// raw must re-parse to the same command: what we forward
				// is what we checked.
				again, err := parseChunks(string(cmd.raw), len(cmd.raw), lim, false)
				if err != nil || len(again) != 1 || again[0] != out[len(out)-1] {
					return out, fmt.Errorf("raw %q re-parses as %v, %v", cmd.raw, again, err)
				}
			}
		}
		rd.argBuf = rd.argBuf[:0]
		if off >= len(input) {
			return out, nil
		}
		n := min(step, len(input)-off)
		buf := rd.space(n)
		copy(buf, input[off:off+n])
		rd.w += n
		off += n
	}
}

func TestRequestParser(t *testing.T) {
	small := limits{maxMultibulk: 10, maxBulk: 16 << 10, maxInline: 1024}
	for _, tc := range []struct {
		name string
		in   string
		lim  *limits
		want []string
		err  string // substring of the protocol error, "" for none
	}{
		{"multibulk", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", nil, []string{"GET|k"}, ""},
		{"pipeline", "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", nil, []string{"PING", "ECHO|"}, ""},
		{"binary bulk", "*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\x00\xff\r\n", nil, []string{"ECHO|\r\n\x00\xff"}, ""},
		{"empty multibulk ignored", "*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", nil, []string{"PING"}, ""},
		{"inline", "PING\r\nSET k  v\n", nil, []string{"PING", "SET|k|v"}, ""},
		{"inline quotes", "SET \"a b\" 'c d'\r\n", nil, []string{"SET|a b|c d"}, ""},
		{"inline escapes", "SET k \"\\x41\\n\\\"\"\r\n", nil, []string{"SET|k|A\n\""}, ""},
		{"inline empty line", "\r\n\r\nPING\r\n", nil, []string{"PING"}, ""},
		{"unbalanced quotes", "SET \"a\r\n", nil, nil, "unbalanced quotes"},
		{"closing quote glued", "SET \"a\"b\r\n", nil, nil, "unbalanced quotes"},
		{"huge multibulk count", "*2147483647\r\n", nil, nil, "invalid multibulk length"},
		{"multibulk count overflow", "*99999999999999999999\r\n", nil, nil, "invalid multibulk length"},
		{"negative bulk", "*1\r\n$-5\r\n", nil, nil, "invalid bulk length"},
		{"1 GB bulk", "*2\r\n$3\r\nSET\r\n$1073741824\r\n", nil, nil, "invalid bulk length"},
		{"bulk not a number", "*1\r\n$x\r\n", nil, nil, "invalid bulk length"},
		{"leading plus", "*1\r\n$+4\r\nPING\r\n", nil, nil, "invalid bulk length"},
		{"leading zero", "*1\r\n$04\r\nPING\r\n", nil, nil, "invalid bulk length"},
		{"not a bulk", "*1\r\n+PING\r\n", nil, nil, "expected '$', got '+'"},
		{"missing CRLF after data", "*1\r\n$4\r\nPINGxx", nil, nil, "expected CRLF"},
		{"bare LF header", "*1\n$4\r\nPING\r\n", nil, nil, "invalid multibulk length"},
		{"CR without LF", "*1\r$4\r\nPING\r\n", nil, nil, "invalid multibulk length"},
		{"too long count line", "*" + strings.Repeat("1", 40), nil, nil, "invalid multibulk length"},
		{"unauth multibulk", "*11\r\n", &small, nil, "invalid multibulk length"},
		{"unauth bulk", "*1\r\n$16385\r\n", &small, nil, "invalid bulk length"},
		{"too big inline", strings.Repeat("a", 2000), &small, nil, "too big inline request"},
	} {
		for _, step := range []int{1, 3, 1 << 20} {
			lim := tc.lim
			if lim == nil {
				lim = &testLimits
			}
			got, err := parseAll(tc.in, step, lim)
			if tc.err == "" {
				if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("%s (step %d): got %q, %v; want %q", tc.name, step, got, err, tc.want)
				}
				continue
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrProto) {
				t.Errorf("%s (step %d): got %q, %v; want error %q", tc.name, step, got, err, tc.err)
			}
		}
	}
}

// TestRequestParserBigBulk: a large argument arriving in pieces grows the
// buffer only as the data arrives, and is parsed once complete.
func TestRequestParserBigBulk(t *testing.T) {
	val := strings.Repeat("x", 3<<20)
	in := string(appendCommandStr(nil, "SET", "k", val))
	rd := newReqReader(4096)
	header := len(in) - len(val) - 2
	buf := rd.space(header)
	copy(buf, in[:header])
	rd.w += header
	if _, _, err := rd.next(&testLimits); err != errIncomplete {
		t.Fatalf("header only: %v", err)
	}
	if n := rd.readSize(16 << 10); n > 16<<10 {
		t.Fatalf("read size %d right after the header: memory must follow the data", n)
	}
	for off := header; off < len(in); {
		n := min(rd.readSize(16<<10), len(in)-off)
		buf := rd.space(n)
		copy(buf, in[off:off+n])
		rd.w += n
		off += n
	}
	cmd, ok, err := rd.next(&testLimits)
	if err != nil || !ok || string(cmd.args[2]) != val {
		t.Fatalf("big bulk: ok %v err %v", ok, err)
	}
}

func TestReplyScanner(t *testing.T) {
	replies := []string{
		"+OK\r\n", "-ERR x\r\n", ":42\r\n", "$3\r\nabc\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
		"*3\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n+x\r\n$0\r\n\r\n",
		"*2\r\n*0\r\n*1\r\n$4\r\n\r\n\r\n\r\n",
	}
	all := strings.Join(replies, "")
	for _, step := range []int{1, 2, 7, len(all)} {
		rr := &replyReader{buf: make([]byte, 8)}
		var got []string
		for off := 0; len(got) < len(replies); {
			end, ok, err := rr.scan()
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if ok {
				got = append(got, string(rr.buf[rr.r:rr.r+end]))
				rr.r += end
				rr.pos, rr.need, rr.stack = 0, 0, rr.stack[:0]
				continue
			}
			n := min(step, len(all)-off)
			if n == 0 {
				t.Fatalf("step %d: ran out of input after %d replies", step, len(got))
			}
			if len(rr.buf)-rr.w < n {
				nb := make([]byte, 2*len(rr.buf)+n)
				copy(nb, rr.buf[:rr.w])
				rr.buf = nb
			}
			copy(rr.buf[rr.w:], all[off:off+n])
			rr.w += n
			off += n
		}
		for i := range replies {
			if got[i] != replies[i] {
				t.Errorf("step %d reply %d: got %q, want %q", step, i, got[i], replies[i])
			}
		}
	}
	for _, bad := range []string{"?x\r\n", "$x\r\n", "*-2\r\n", "+OK\n"} {
		rr := &replyReader{buf: []byte(bad), w: len(bad)}
		if _, _, err := rr.scan(); err == nil {
			t.Errorf("scan %q: no error", bad)
		}
	}
}

func TestParseValueRoundTrip(t *testing.T) {
	in := "*4\r\n$7\r\nmessage\r\n$3\r\nabc\r\n:5\r\n*2\r\n$-1\r\n+x\r\n"
	v, rest, err := parseValue([]byte(in))
	if err != nil || len(rest) != 0 {
		t.Fatalf("parse: %v, rest %q", err, rest)
	}
	if out := appendValue(nil, v); !bytes.Equal(out, []byte(in)) {
		t.Fatalf("round trip: %q", out)
	}
}

// FuzzRequestParser: any input either parses into commands whose raw
// bytes re-parse identically (no smuggling), or ends in a protocol error;
// it never panics and never buffers beyond what arrived.
func FuzzRequestParser(f *testing.F) {
	for _, s := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "PING\r\n", "SET \"a\\x41\" 'b'\r\n", "*2147483647\r\n",
		"*1\r\n$-5\r\n", "*2\r\n$3\r\nSET\r\n$1073741824\r\n", "*1\r\n$4\r\nPINGxx", "*-1\r\n*0\r\n",
	} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, in string, step int) {
		if step <= 0 || step > 1<<16 {
			step = 1 + len(in)%17
		}
		small := limits{maxMultibulk: 64, maxBulk: 4096, maxInline: 1024}
		cmds, err := parseAll(in, step, &small)
		if err != nil && !errors.Is(err, ErrProto) {
			t.Fatalf("non-protocol error %v after %q", err, cmds)
		}
	})
}
