package rdbfile

import "testing"

// The check value of Redis's own crc64 test (src/crc64.c); the DUMP
// payloads of a real server are checked in TestWriterLoads.
func TestChecksum(t *testing.T) {
	for in, want := range map[string]uint64{"123456789": 0xe9c6d914c4b8d9ca} {
		if got := Checksum([]byte(in)); got != want {
			t.Errorf("Checksum(%q) = %#x, want %#x", in, got, want)
		}
	}
	if got := crc64Update(Checksum([]byte("1234")), []byte("56789")); got != 0xe9c6d914c4b8d9ca {
		t.Errorf("incremental checksum = %#x", got)
	}
}
