package v4vheap

import "unsafe"

// unsafeBytes views words as bytes, giving 8-byte-aligned memory.
func unsafeBytes(words []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(words)*8)
}
