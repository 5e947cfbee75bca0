// Command benchguest compares our NIC (served over vfio-user) with QEMU's
// built-in e1000e in the same run: the same guest image, the same TAP
// backend in a namespace it creates, one guest after the other so that they
// do not share the CPU. It prints TCP throughput both ways and the ping
// round trip of each, and our figure as a ratio of QEMU's. Run it as root
// with `make bench-guest`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"e1000e-vfu/tests/harness"
)

type result struct {
	up, down float64 // Mbit/s, best of the rounds
	rtt      time.Duration
}

func main() {
	mib := flag.Int("mib", 32, "MiB per transfer")
	rounds := flag.Int("rounds", 2, "transfers each way per NIC (the best counts)")
	pings := flag.Int("pings", 20, "pings per NIC")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 40*time.Minute)
	defer cancel()
	if err := run(ctx, int64(*mib)<<20, *rounds, *pings); err != nil {
		fmt.Fprintln(os.Stderr, "bench-guest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, size int64, rounds, pings int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root")
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	bin, err := harness.BuildServer(ctx, repo)
	if err != nil {
		return err
	}
	cache, err := harness.Prepare(ctx, repo, os.Stderr)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "evfu-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	initramfs, err := cache.BuildInitramfs(ctx, repo, dir)
	if err != nil {
		return err
	}
	fmt.Printf("guest: kernel %s under %s (TCG, 1 vCPU); backend: TAP in a namespace; %d MiB per transfer, best of %d; %d pings\n",
		cache.KernelRelease, cache.QEMUVersion, size>>20, rounds, pings)
	var res [2]result
	for i, kind := range []string{harness.BuiltinE1000E, harness.VFIOUser} {
		r, err := measure(ctx, cache, initramfs, bin, filepath.Join(dir, kind), kind, size, rounds, pings)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		res[i] = r
		fmt.Printf("  %-22s up %7.1f Mbit/s  down %7.1f Mbit/s  ping %v\n", label(kind), r.up, r.down, r.rtt.Round(time.Microsecond))
	}
	q, o := res[0], res[1]
	fmt.Println()
	fmt.Printf("%-26s %12s %12s %8s\n", "", "QEMU e1000e", "e1000e-vfu", "ratio")
	fmt.Printf("%-26s %12.1f %12.1f %7.2fx\n", "TCP guest→host (Mbit/s)", q.up, o.up, o.up/q.up)
	fmt.Printf("%-26s %12.1f %12.1f %7.2fx\n", "TCP host→guest (Mbit/s)", q.down, o.down, o.down/q.down)
	fmt.Printf("%-26s %12.3f %12.3f %7.2fx\n", "ping round trip (ms)", ms(q.rtt), ms(o.rtt), ms(o.rtt)/ms(q.rtt))
	fmt.Println("(throughput: higher is better, goal ≥ 1.0x; round trip: lower is better, goal ≤ 1.5x)")
	return nil
}

func label(kind string) string {
	if kind == harness.VFIOUser {
		return "e1000e-vfu (vfio-user)"
	}
	return "QEMU e1000e (built-in)"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func measure(ctx context.Context, cache *harness.Cache, initramfs, bin, dir, kind string, size int64, rounds, pings int) (result, error) {
	ns, err := harness.NewNetNS(fmt.Sprintf("evfu-bench-%d", os.Getpid()%100000))
	if err != nil {
		return result{}, err
	}
	defer ns.Close()
	if err := ns.AddTAP("tap0", "10.0.2.2/24", 0); err != nil {
		return result{}, err
	}
	cfg := harness.VMConfig{Cache: cache, Initramfs: initramfs, Dir: filepath.Join(dir, "vm")}
	if kind == harness.BuiltinE1000E {
		cfg.NetNS = ns
		cfg.NIC = harness.NIC{Kind: kind, Netdev: "tap,id=n0,ifname=tap0,script=no,downscript=no"}
	} else {
		srv, err := harness.StartServer(ctx, harness.ServerConfig{Bin: bin, Dir: filepath.Join(dir, "srv"), Netdev: "tap,ifname=tap0", NetNS: ns, Args: []string{"--log-level", "warn"}})
		if err != nil {
			return result{}, err
		}
		defer srv.Stop()
		cfg.NIC = harness.NIC{Kind: kind, Socket: srv.Socket}
	}
	vm, err := harness.StartVM(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer vm.Stop()
	a := vm.Agent
	if _, err := a.Sh(ctx, time.Minute, "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0"); err != nil {
		return result{}, err
	}
	if _, err := a.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		return result{}, err
	}
	// Warm up ARP and the TCP stacks before anything is timed.
	if _, err := harness.PingRTT(ctx, a, "10.0.2.2", 3); err != nil {
		return result{}, err
	}
	var r result
	if r.rtt, err = harness.PingRTT(ctx, a, "10.0.2.2", pings); err != nil {
		return result{}, err
	}
	for range rounds {
		for _, up := range []bool{true, false} {
			x, err := harness.TCPTransfer(ctx, ns, a, "10.0.2.2", up, size)
			if err != nil {
				return result{}, fmt.Errorf("%w\n%s", err, vm.Dump())
			}
			if up {
				r.up = max(r.up, x.Mbps())
			} else {
				r.down = max(r.down, x.Mbps())
			}
		}
	}
	return r, nil
}
