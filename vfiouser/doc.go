// Package vfiouser implements the vfio-user protocol in pure Go: wire types,
// message framing with descriptor passing, a server that serves one
// device.Device to one client at a time, the DMA table that gives the device
// the client's memory, and a client for tests, tools and benchmarks.
//
// Protocol coverage, limits and the MIG_DATA_SIZE extension (DEVICE_FEATURE
// 9, answered with the bytes of migration data left as a u64) are described
// in README.md in this directory.
package vfiouser
