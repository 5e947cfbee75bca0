package main

import (
	"context"
	"errors"
)

// run serves the device described by cfg until ctx is cancelled (SIGINT or
// SIGTERM) or serving fails. It is where the server, the NIC, the backend
// and the control socket are put together.
func run(ctx context.Context, cfg Config) error {
	_ = ctx
	_ = cfg
	return errors.New("not wired: the server, NIC and backends are not yet connected here")
}
