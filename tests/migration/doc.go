// Package migration holds the live-migration tests: a running Linux guest
// moves between two real QEMUs, each with its own e1000e-vfu server, while
// TCP and UDP traffic flows. They are built only with the "integration" tag
// (make test-migration) and need root; see README.md.
package migration
