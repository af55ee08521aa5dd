package rdbfile

import "hash/crc64"

// Redis checksums RDB files and DUMP payloads with CRC-64/Jones: the
// reflected polynomial 0x95ac9329ac4bc9b5, initial value 0 and no final
// inversion. hash/crc64 computes the same table-driven CRC but inverts
// the value before and after, so crc64Update undoes both inversions.
var jones = crc64.MakeTable(0x95ac9329ac4bc9b5)

// crc64Update extends Redis's CRC-64 crc with p.
func crc64Update(crc uint64, p []byte) uint64 {
	return ^crc64.Update(^crc, jones, p)
}

// Checksum is Redis's CRC-64 of p (crc64(0, p) in Redis's crc64.c).
func Checksum(p []byte) uint64 { return crc64Update(0, p) }
