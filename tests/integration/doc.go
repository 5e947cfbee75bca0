// Package integration holds the tests that run a real QEMU with a real Linux
// guest. They are built only with the "integration" tag (make test-qemu) and
// need root; see tests/README.md.
package integration
