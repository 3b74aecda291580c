#!/bin/sh
# PID 1 of a kernel-matrix VM (busybox sh), written by tests/vm. It mounts what a Debian
# host has, starts the TLS servers of /servers, runs each case of /cases, and prints each
# case's raw outputs on the console (a gzipped tar in base64 between two marker lines).
# It asserts nothing: the host does.
#
# /servers: PORT|COMMAND, started in /srv.
# /cases:   NAME|KIND|TRACING|PAGE|DECOY|SNIFFER ARGS|CLIENT COMMAND
#   KIND after:  sslsniff starts, then the client runs; then Ctrl-C.
#        before: the client and a decoy (the same command for the page DECOY) start
#                first and wait for a line on stdin; sslsniff starts with $CLIENT set
#                to the client's PID; then both go on; then Ctrl-C.
#        alone:  only the client command runs.
#   TRACING tracefs: tracefs and debugfs mounted; none: neither.
#   The commands see $PAGE, $REQUEST (an HTTP/1.0 GET of it), $OUT (the case's
#   directory) and $CLIENT. Each case's directory holds what it printed (sniff.out,
#   sniff.err, client.out, ...), exit codes (*.rc), PIDs (*.pid), times from
#   /proc/uptime (times), BPF programs and links before, while sslsniff runs and after
#   (bpftool), and the kernel log.
export PATH=/usr/sbin:/usr/bin HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
# Kernel messages would cut into the base64 lines: each case keeps its part of the log.
echo 1 >/proc/sys/kernel/printk
ip link set lo up
ulimit -n 65536

mounted() { grep -q " $1 " /proc/mounts; }

tracing() {
	if [ "$1" = tracefs ]; then
		mounted /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
		mounted /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
	else
		# debugfs mounts tracefs below itself when that is looked at: it goes too.
		for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do
			if mounted $m; then umount $m; fi
		done
	fi
}

stamp() {
	read -r up _ </proc/uptime
	echo "$1 $up" >>times
}

# Polls `test` every 50 ms, up to $1 seconds; fails when time runs out.
poll() {
	limit=$(($1 * 20))
	shift
	while ! "$@"; do
		limit=$((limit - 1))
		[ $limit -gt 0 ] || return 1
		sleep 0.05
	done
}

listening() { grep -q ":$(printf %04X "$1") 00000000:0000 0A " /proc/net/tcp; }
ready_or_gone() { grep -q '"type":"ready"' sniff.err || ! kill -0 "$sniffer" 2>/dev/null; }
# A process that is gone has no maps: that ends the wait too.
tls_loaded() { grep -q ssl "/proc/$1/maps" 2>/dev/null || ! kill -0 "$1" 2>/dev/null; }
# On kernels without multi-uprobe links a child of sslsniff, of the same name, releases
# the probes after sslsniff exits.
released() { ! pidof sslsniff >/dev/null; }

# NAME PAGE [STDIN]: starts the client command in the background; $! is its PID (each
# exec keeps it: sh, then busybox timeout, which execs what it runs).
start_client() {
	PAGE=$2 REQUEST=$(printf 'GET /%s HTTP/1.0\r\n\r\nx' "$2") \
		sh -c 'REQUEST=${REQUEST%x}; echo $$ >'"$1"'.pid; exec timeout 30 '"$client" \
		<"${3:-/dev/null}" >"$1.out" 2>"$1.err" &
}

start_sniffer() {
	stamp start
	sh -c 'exec timeout 120 sslsniff --status json '"$args" </dev/null >sniff.out 2>sniff.err &
	sniffer=$!
	echo $sniffer >sniff.pid
	poll 60 ready_or_gone
	grep -q '"type":"ready"' sniff.err || return
	stamp ready
	# What sslsniff has loaded: the listing that must be empty of it in the end.
	bpftool -j prog show >progs.running 2>&1
}

stop_sniffer() {
	# Events are drained on a short timer: give the last ones time to arrive.
	sleep 0.3
	stamp sigint
	kill -INT $sniffer 2>/dev/null
	wait $sniffer
	echo $? >sniff.rc
	stamp exit
	poll 60 released && stamp released
}

case_after() {
	start_sniffer
	start_client client "$PAGE"
	wait $!
	echo $? >client.rc
	stop_sniffer
}

case_before() {
	mkfifo gate.client gate.decoy
	# Held open for writing, so that opening them for reading does not block.
	exec 3<>gate.client 4<>gate.decoy
	start_client client "$PAGE" gate.client
	client_pid=$!
	start_client decoy "$DECOY" gate.decoy
	decoy_pid=$!
	poll 30 tls_loaded $client_pid
	poll 30 tls_loaded $decoy_pid
	export CLIENT=$client_pid
	start_sniffer
	echo >&3
	echo >&4
	wait $client_pid
	echo $? >client.rc
	wait $decoy_pid
	echo $? >decoy.rc
	exec 3>&- 4>&-
	stop_sniffer
}

case_alone() {
	stamp start
	start_client client "$PAGE"
	wait $!
	echo $? >client.rc
	stamp exit
}

report() {
	echo
	echo "===SSLSNIFF-BEGIN $1==="
	tar -cz -C "/out/$1" . | base64
	echo "===SSLSNIFF-END $1==="
}

mkdir -p /out/info
cd /out/info
stamp init
uname -r >uname
cat /proc/cmdline >cmdline
cat /proc/filesystems >filesystems
ls -l /sys/kernel/btf/vmlinux >btf 2>&1
dmesg -c >dmesg
report info

tracing tracefs
cd /srv
while IFS='|' read -r port command <&9; do
	sh -c "exec $command" </dev/null >/dev/null 2>&1 &
	poll 60 listening "$port" || echo "server on port $port did not come up"
done 9</servers

while IFS='|' read -r name kind mounts page decoy args client <&9; do
	echo "case $name"
	mkdir -p "/out/$name"
	cd "/out/$name"
	export PAGE=$page DECOY=$decoy OUT=/out/$name
	stamp begin
	tracing "$mounts"
	cat /proc/mounts >mounts
	bpftool -j prog show >progs.before 2>&1
	bpftool -j link show >links.before 2>&1
	"case_$kind"
	bpftool -j prog show >progs.after 2>&1
	bpftool -j link show >links.after 2>&1
	dmesg -c >dmesg
	stamp end
	report "$name"
done 9</cases

echo "===SSLSNIFF-DONE==="
poweroff -f
