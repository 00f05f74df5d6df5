// Package redisslot computes Redis Cluster hash slots and hash tags as
// Redis does, for the code that must know where a key lives (the
// durability barrier's keys, the worker's grouping of queue keys, the
// tests' slot checks).
package redisslot

import "strings"

// Count is the number of hash slots of a Redis Cluster.
const Count = 16384

// Tag is what Redis hashes of key: the text between the first '{' and the
// next '}' when it is not empty, else the whole key.
func Tag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// Of is the hash slot of key: CRC16 (XMODEM: polynomial 0x1021, initial
// value 0) of its Tag, modulo Count.
func Of(key string) int {
	key = Tag(key)
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % Count
}
