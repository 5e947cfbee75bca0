// Command demo shows what the project does, end to end: it builds the
// server, prepares the Debian 13 root with QEMU and the guest (cached), boots
// a Linux guest whose NIC is our e1000e attached through vfio-user-pci,
// shows the driver binding and the link coming up, moves traffic over a TAP
// in a network namespace it creates, reports the transfer rates, then
// live-migrates the running guest to a second QEMU and server while a stream
// flows into it (with the QEMU of tests/qemu-migration, built once and
// cached; -migrate=false skips this and runs the stock QEMU), and shuts
// everything down. Run it as root with `make demo`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"e1000e-vfu/tests/harness"
)

func main() {
	builtin := flag.Bool("builtin", false, "use QEMU's built-in e1000e instead of our server (for comparison)")
	mib := flag.Int("mib", 32, "MiB to move each way")
	migrate := flag.Bool("migrate", true, "end with a live migration to a second QEMU and server (our NIC only; builds the patched QEMU of tests/qemu-migration once)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := run(ctx, *builtin, *migrate && !*builtin, int64(*mib)<<20); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var t0 = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, builtin, migrate bool, size int64) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespace, TAP, the prepared root)")
	}
	repo, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	say("building the server")
	bin, err := harness.BuildServer(ctx, repo)
	if err != nil {
		return err
	}
	say("preparing the Debian 13 root with QEMU and the guest (cached after the first run; a few minutes from nothing)")
	start := time.Now()
	cache, err := harness.Prepare(ctx, repo, os.Stdout)
	if err != nil {
		return err
	}
	say("prepared in %v: %s, guest kernel %s, cache %s", time.Since(start).Round(time.Second), cache.QEMUVersion, cache.KernelRelease, cache.Dir)
	dir, err := os.MkdirTemp("", "evfu-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	say("building the guest agent and the initramfs")
	initramfs, err := cache.BuildInitramfs(ctx, repo, dir)
	if err != nil {
		return err
	}

	hosts, err := harness.NewHosts(fmt.Sprintf("evfu-demo-%d", os.Getpid()%100000))
	if err != nil {
		return err
	}
	defer func() {
		hosts.Close()
		say("removed the network namespaces")
	}()
	if err := hosts.AddTAP(0, "tap-a"); err != nil {
		return err
	}
	say("network: two hosts (namespaces %s and %s, each a Linux bridge), joined by a LAN (%s) where the peer is %s",
		hosts.Host[0].Name, hosts.Host[1].Name, hosts.LAN.Name, harness.PeerIP)
	say("host 0: tap-a on its bridge is the guest's backend")

	cfg := harness.VMConfig{Cache: cache, Initramfs: initramfs, Dir: filepath.Join(dir, "vm"), NetNS: hosts.Host[0]}
	var migQEMU *harness.MigQEMU
	if migrate {
		say("building QEMU with vfio-user live migration (tests/qemu-migration; cached after the first run, about 10 minutes from nothing)")
		if migQEMU, err = harness.BuildMigQEMU(ctx, repo, os.Stdout); err != nil {
			return err
		}
		say("patched QEMU %s in %s", migQEMU.Version, migQEMU.Dir)
		cfg.QEMU, cfg.ExtraQMP = migQEMU.Command, true
	}
	var srv *harness.Server
	if builtin {
		cfg.NIC = harness.NIC{Kind: harness.BuiltinE1000E, Netdev: "tap,id=n0,ifname=tap-a,script=no,downscript=no"}
		say("NIC: QEMU's built-in e1000e (comparison mode)")
	} else {
		sc := harness.ServerConfig{Bin: bin, Dir: filepath.Join(dir, "srv"), Netdev: "tap,ifname=tap-a", NetNS: hosts.Host[0]}
		srv, err = harness.StartServer(ctx, sc)
		if err != nil {
			return err
		}
		defer func() {
			err := srv.Stop()
			say("server stopped (exit: %v)", errOrOK(err))
		}()
		say("server A on host 0: %s serve --socket %s --netdev %s (pid %d)", filepath.Base(bin), srv.Socket, sc.Netdev, srv.Pid())
		cfg.NIC = harness.NIC{Kind: harness.VFIOUser, Socket: srv.Socket}
	}
	say("booting the guest under QEMU (TCG, 1 vCPU, 512 MiB shared memfd RAM)")
	vm, err := harness.StartVM(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		vm.Stop()
		say("QEMU stopped")
	}()
	say("guest booted, agent ready")
	a := vm.Agent
	sh := func(cmd string) (string, error) { return a.Sh(ctx, time.Minute, cmd) }

	out, err := sh(`for d in /sys/bus/pci/devices/*; do if [ "$(cat $d/vendor):$(cat $d/device)" = 0x8086:0x10d3 ]; then echo "$(basename $d) 8086:10d3 driver=$(basename $(readlink $d/driver))"; fi; done`)
	if err != nil {
		return err
	}
	say("PCI: %s", strings.TrimSpace(out))
	out, _ = sh("dmesg | grep -i e1000e")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		say("  guest dmesg: %s", l)
	}
	if _, err := sh("ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0"); err != nil {
		return err
	}
	if _, err := a.Call(ctx, 30*time.Second, "wait-link", "eth0", "up"); err != nil {
		return err
	}
	out, _ = sh("dmesg | grep 'Link is Up' | tail -n 1")
	say("link up: %s", strings.TrimSpace(out))
	mac, _ := sh("cat /sys/class/net/eth0/address")
	say("eth0 %s, 10.0.2.15/24", strings.TrimSpace(mac))

	out, err = sh("ping -c 5 -W 5 10.0.2.2")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, "packets") || strings.Contains(l, "round-trip") {
			say("ping: %s", l)
		}
	}

	for _, up := range []bool{true, false} {
		way := "host → guest"
		if up {
			way = "guest → host"
		}
		say("TCP %s: %d MiB ...", way, size>>20)
		res, err := harness.TCPTransfer(ctx, hosts.LAN, a, harness.PeerIP, up, size)
		if err != nil {
			return err
		}
		say("TCP %s: %d MiB in %.1f s = %.1f Mbit/s, SHA-256 equal at both ends", way, size>>20, res.Seconds, res.Mbps())
	}
	if srv != nil {
		if raw, err := srv.Ctl(ctx, map[string]any{"cmd": "query-stats"}); err == nil {
			var st struct {
				LinkUp bool              `json:"link_up"`
				Stats  map[string]uint64 `json:"stats"`
			}
			if json.Unmarshal(raw, &st) == nil {
				s := st.Stats
				say("server statistics: link up %v; received %d frames (%d MiB), sent %d frames (%d MiB), missed %d",
					st.LinkUp, s["gprc"], s["gorc"]>>20, s["gptc"], s["gotc"]>>20, s["mpc"])
			}
		}
	}
	if migrate {
		m := liveMigration{bin: bin, dir: dir, cache: cache, qemu: migQEMU, initramfs: initramfs,
			hosts: hosts, srv: srv, vm: vm, size: size}
		if err := m.run(ctx); err != nil {
			return fmt.Errorf("live migration: %w", err)
		}
	}
	say("shutting down")
	return nil
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
