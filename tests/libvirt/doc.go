// Package libvirt holds make test-libvirt: two libvirt daemons, each a
// "host" of the two-host network, migrate a guest with an e1000e-vfu NIC
// with virsh migrate --live through the hook of contrib/libvirt. Built
// only with the "integration" tag; needs root. See README.md here.
package libvirt
