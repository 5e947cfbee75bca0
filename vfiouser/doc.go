// Package vfiouser implements the vfio-user protocol in pure Go: wire types,
// message framing with descriptor passing, a server that serves one
// device.Device to one client at a time, the DMA table that gives the device
// the client's memory, and a client for tests, tools and benchmarks.
//
// Protocol coverage is described in README.md in this directory.
package vfiouser
