// Command e1000e-vfu serves an emulated e1000e NIC over vfio-user.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "e1000e-vfu: not yet wired")
	os.Exit(2)
}
